"""The studio (Gradio app) with the shipped model: its handlers directly, and the real page in headless Chromium.

Everything is checked at the model's output size (192x256 for the shipped default; 64x64 without decoder_hr):
results, editor canvases, masks, boxes, previews and messages. The browser test drives every tab once.
The browser test needs Debian's `chromium` + `chromium-driver` (`.ci/install_browser.sh`) and Selenium; it skips
with the reason when they are missing. Screenshots go to the test's tmp dir and, when `M6_SCREENSHOT_DIR` is
set, also there.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

gr = pytest.importorskip("gradio", reason="the studio needs Gradio: pip install -e '.[studio]'")

from m6_fashion import studio as studio_mod  # noqa: E402
from m6_fashion.studio import (  # noqa: E402
    Studio, build_app, display_size, fit_to, load_examples, painted_mask, parse_box, preset_box, preset_mask,
)

STEPS = 2  # few SMART passes keep every call quick on CPU
W, H = 192, 256  # the shipped default model's output (width x height)


@pytest.fixture(scope="module")
def app():
    """The studio around the shipped default model."""
    from m6_fashion import M6FashionPipeline

    return build_app(M6FashionPipeline.from_pretrained())


@pytest.fixture(scope="module")
def studio(app) -> Studio:
    return app.studio


@pytest.fixture(scope="module")
def shirt(studio):
    _, images = studio.text_to_image("Men Navy Blue Casual Shirt", 0, STEPS, 1)
    return images[0]


def _example(name: str) -> PIL.Image.Image:
    return PIL.Image.open(next(e["path"] for e in load_examples() if e["name"] == name)).convert("RGB")


# ---------------------------------------------------------------------------------------------- handlers
def test_the_studio_works_at_the_models_output_size(studio):
    assert (studio.width, studio.height) == (W, H)
    assert (studio.height, studio.width) == tuple(studio.pipe.default_size)


def test_text_to_image_returns_images_reproducibly_at_their_real_size(studio):
    gallery, images = studio.text_to_image("Women Pink Top", 3, STEPS, 2)
    assert len(gallery) == 2 and len(images) == 2
    assert all(im.size == (W, H) for im in images)
    # shown at the real size, not resampled
    assert all(np.array_equal(np.asarray(item[0]), np.asarray(im)) and "seed 3" in item[1] for item, im in zip(gallery, images))
    again = studio.text_to_image("Women Pink Top", 3, STEPS, 2)[1]
    other = studio.text_to_image("Women Pink Top", 4, STEPS, 2)[1]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again))
    assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, other))


def test_inpainting_changes_only_the_painted_region_of_the_output(studio, shirt):
    layer = PIL.Image.new("RGBA", (W, H))  # the editor's canvas has the output's shape and size
    layer.paste((255, 42, 109, 255), (0, 160, W, H))  # paint the rows below 160 (cells of 16 px)
    editor = {"background": shirt, "layers": [layer], "composite": None}
    _, images = studio.inpaint(editor, "Men Red Casual Shirt", "painted", 1, STEPS)
    original = np.asarray(shirt, dtype=np.int16)
    edited = np.asarray(images[0], dtype=np.int16)
    assert edited.shape == (H, W, 3)
    assert np.array_equal(edited[:160], original[:160])  # the unpainted part is kept pixel for pixel
    assert np.abs(edited[160:] - original[160:]).mean() > 1.0  # the painted part was regenerated


def test_every_tab_runs_at_the_output_size(studio, shirt):
    other = studio.text_to_image("Men Red T-shirt", 1, STEPS, 1)[1][0]
    runs = {
        "mix": studio.style_mix({"background": shirt, "layers": [], "composite": shirt}, other, "lower half", 0, STEPS),
        "outpaint": studio.outpaint(shirt, 48, 64, 144, 192, "", 0, STEPS),
        "reference": studio.reference_edit(other, 48, 32, 144, 128, "Men Shirt", None, 0, STEPS),
        "reference on a garment": studio.reference_edit(other, 48, 32, 144, 128, "", shirt, 0, STEPS),
    }
    for name, (gallery, images) in runs.items():
        assert len(images) == 1 and images[0].size == (W, H), name
        assert gallery[0][0].size == (W, H), name


def test_reference_edit_on_a_garment_changes_only_the_box(studio, shirt):
    patch = _example("checked_shirt").crop((48, 112, 144, 192))
    _, images = studio.reference_edit(patch, 48, 32, 144, 128, "", shirt, 0, STEPS)
    diff = np.abs(np.asarray(images[0], dtype=np.int16) - np.asarray(shirt, dtype=np.int16)).max(-1)
    outside = np.ones((H, W), dtype=bool)
    outside[32:128, 48:144] = False
    assert diff[outside].max() == 0 and diff[~outside].mean() > 1.0


def test_outpainting_fits_the_photo_into_the_box_as_the_preview_shows(studio):
    photo = _example("navy_top")  # 3:4
    box = (50, 70, 130, 150)  # widened by the model to its 16-px cells: the square (48, 64, 144, 160)
    assert studio.snap(box) == (48, 64, 144, 160)
    _, images = studio.outpaint(photo, *box, "", 0, STEPS)
    result = np.asarray(images[0], dtype=np.int16)
    preview = np.asarray(studio.preview_outpaint(photo, *box), dtype=np.int16)
    assert preview.shape == result.shape == (H, W, 3)
    inside = (slice(67, 157), slice(51, 141))  # the box without the preview's 3-px outline
    assert np.abs(result[inside] - preview[inside]).max() <= 1  # the photo is kept where and as the preview shows it
    want = np.asarray(fit_to(photo, 96, 96), dtype=np.int16)  # aspect kept: white bands left and right, not squeezed
    assert np.abs(result[64:160, 48:144] - want).max() <= 1
    assert (want[:, :8] == 255).all() and (want[:, -8:] == 255).all()
    assert studio.preview_outpaint(photo, 0, 0, 300, 40) is None  # an invalid box: no preview, the run explains


def test_uploads_are_padded_on_white_to_the_outputs_shape(studio):
    square = PIL.Image.new("RGB", (100, 100), (0, 0, 255))
    fitted = np.asarray(studio._fit(square))
    assert fitted.shape == (H, W, 3)
    assert (fitted[:30] == 255).all() and (fitted[-30:] == 255).all()  # white bands above and below
    assert (fitted[40:216, :, 2] > 200).all() and (fitted[40:216, :, 0] < 60).all()
    layer = PIL.Image.new("RGBA", (100, 100))
    layer.paste((255, 0, 0, 255), (0, 0, 100, 50))  # the upper half of a square canvas
    mask = np.asarray(painted_mask({"background": square, "layers": [layer], "composite": None}, W, H))
    assert mask.shape == (H, W) and mask[:30].max() == 0 and mask[31:127].min() == 255 and mask[128:].max() == 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s, im: s.text_to_image("   ", 0, STEPS, 1), "Type a description"),
        (lambda s, im: s.text_to_image("Men Shirt", -1, STEPS, 1), "seed"),
        (lambda s, im: s.text_to_image("Men Shirt", 0, 0, 1), "Steps"),
        (lambda s, im: s.text_to_image("Men Shirt", 0, STEPS, 99), "Number of images"),
        (lambda s, im: s.inpaint({"background": im, "layers": [PIL.Image.new("RGBA", im.size)], "composite": im}, "", "painted", 0, STEPS),
         "No mask painted"),
        (lambda s, im: s.inpaint(None, "", "lower half", 0, STEPS), "upload an image"),
        (lambda s, im: s.inpaint({"background": im, "layers": [], "composite": im}, "", "top", 0, STEPS), "Unknown mask preset 'top'; choose one of: painted"),
        (lambda s, im: s.outpaint(im, 0, 0, 200, 40, "", 0, STEPS),
         r"outside the 192x256 \(width x height\) image or empty: use 0 <= left < right <= 192 and 0 <= top < bottom <= 256"),
        (lambda s, im: s.outpaint(im, 0, 100, 64, 257, "", 0, STEPS), "outside the 192x256"),
        (lambda s, im: s.outpaint(im, 0, 0, 192, 256, "", 0, STEPS), "covers the whole 192x256 image"),
        (lambda s, im: s.outpaint(im, 1, 1, 191, 255, "", 0, STEPS), "covers the whole 192x256 image .*16-px cells"),
        (lambda s, im: s.outpaint(im, 10, None, 40, 40, "", 0, STEPS), "top is empty"),
        (lambda s, im: s.outpaint(im, 10, 2.5, 40, 40, "", 0, STEPS), "top must be a whole number"),
        (lambda s, im: s.reference_edit(im, 100, 10, 50, 40, "", None, 0, STEPS), r"\(100, 10, 50, 40\) is outside the 192x256 .* or empty"),
        (lambda s, im: s.reference_edit(None, 0, 0, 32, 32, "", None, 0, STEPS), "reference patch"),
        (lambda s, im: s.style_mix({"background": im, "layers": [], "composite": im}, None, "lower half", 0, STEPS), "second garment"),
    ],
)
def test_bad_input_gives_a_clear_gr_error(studio, shirt, call, message):
    with pytest.raises(gr.Error, match=message):
        call(studio, shirt)


def test_unreadable_upload_gives_a_clear_gr_error(tmp_path, studio):
    from gradio.components.image import ImageData

    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"this is not a PNG")
    with pytest.raises(gr.Error, match="Cannot read the uploaded file as an image"):
        studio_mod.guard_uploads(gr.Image(type="pil")).preprocess(ImageData(path=str(bad), orig_name="not_an_image.png"))
    # Gradio re-creates a component from its constructor arguments when an event updates it (loading an example does)
    component = studio_mod._image_input(label="Garment")
    recreated = type(component)(**component.constructor_args)
    with pytest.raises(gr.Error, match="Cannot read the uploaded file as an image"):
        recreated.preprocess(ImageData(path=str(bad), orig_name="not_an_image.png"))
    with pytest.raises(Exception) as plain:  # components the studio did not mark keep Gradio's own behaviour
        gr.Image(type="pil").preprocess(ImageData(path=str(bad), orig_name="not_an_image.png"))
    assert not isinstance(plain.value, gr.Error)
    with pytest.raises(gr.Error, match="Cannot read the reference patch"):
        studio.reference_edit(str(bad), 0, 0, 32, 32, "", None, 0, STEPS)


def test_masks_boxes_and_display_sizes():
    stroke = PIL.Image.new("RGBA", (W, H))
    stroke.paste((255, 0, 0, 255), (100, 200, 101, 201))  # one painted pixel marks that output pixel
    mask = np.asarray(painted_mask({"background": None, "layers": [stroke], "composite": None}, W, H))
    assert mask.shape == (H, W) and mask.sum() == 255 and mask[200, 100] == 255
    small = np.asarray(painted_mask({"background": None, "layers": [stroke.resize((256, 256))], "composite": None}, 64, 64))
    assert small.shape == (64, 64) and small.sum() > 0  # a 256 px canvas for a 64x64 model: any painted pixel marks its cell
    assert painted_mask({"background": None, "layers": [PIL.Image.new("RGBA", (W, H))], "composite": None}, W, H) is None
    assert painted_mask(None, W, H) is None
    lower = np.asarray(preset_mask("lower half", W, H))
    assert lower.shape == (H, W) and lower[128:].min() == 255 and lower[:128].max() == 0
    assert np.asarray(preset_mask("left half", W, H))[:, :96].min() == 255
    assert preset_box("chest", W, H) == (48, 32, 144, 128) and preset_box("centre", 64, 64) == (16, 16, 48, 48)
    with pytest.raises(gr.Error, match="choose one of: centre, upper half"):
        preset_box("collar", W, H)
    assert parse_box(0, 16.0, "192", 256, W, H) == (0, 16, 192, 256)
    with pytest.raises(gr.Error, match="whole number"):
        parse_box(0, 1.5, 10, 10, W, H)
    with pytest.raises(gr.Error, match="outside the 192x256"):
        parse_box(0, 0, 256, 192, W, H)  # a landscape box does not fit the portrait output
    assert display_size(W, H) == (W, H) and display_size(64, 64) == (256, 256) and display_size(48, 64) == (192, 256)
    assert studio_mod.for_display(PIL.Image.new("RGB", (64, 64))).size == (256, 256)


def test_a_pipeline_without_the_high_resolution_decoder_keeps_the_64px_studio():
    from m6_fashion import M6FashionPipeline

    studio = Studio(M6FashionPipeline.from_pretrained("m6-fashion-64"))
    assert (studio.width, studio.height) == (64, 64)
    gallery, images = studio.text_to_image("Men Navy Blue Casual Shirt", 0, STEPS, 1)
    assert images[0].size == (64, 64) and gallery[0][0].size == (256, 256)  # small outputs are upscaled for the page
    _, edited = studio.inpaint({"background": gallery[0][0], "layers": [], "composite": None}, "", "lower half", 0, STEPS)
    assert edited[0].size == (64, 64)
    with pytest.raises(gr.Error, match=r"outside the 64x64 \(width x height\) image"):
        studio.outpaint(images[0], 0, 0, 70, 40, "", 0, STEPS)


def test_examples_come_from_the_test_split_and_the_app_starts_without_them(monkeypatch, studio):
    examples = load_examples()
    assert len(examples) >= 4 and all(os.path.isfile(e["path"]) and e["caption"] for e in examples)
    assert all(PIL.Image.open(e["path"]).size == (W, H) for e in examples)  # the high-resolution test photos
    monkeypatch.setattr(studio_mod, "EXAMPLES_DIR", str(Path(__file__).parent / "no-such-folder"))
    assert load_examples() == []
    assert isinstance(build_app(studio.pipe), gr.Blocks)


def test_cli_has_the_studio_subcommand(capsys):
    from m6_fashion.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["studio", "--help"])
    assert exit_info.value.code == 0
    assert "--port" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- browser
def _find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _find_chromedriver():
    return shutil.which("chromedriver") or next(
        (p for p in ("/usr/lib/chromium/chromedriver", "/usr/lib/chromium-browser/chromedriver") if os.path.isfile(p)), None
    )


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="Selenium is not installed (pip install -e '.[studio]')")
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _find_chromium(), _find_chromedriver()
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver, or .ci/install_browser.sh)")
    if driver_path is None:
        pytest.skip("chromedriver is not installed (apt-get install chromium-driver, or .ci/install_browser.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def served(app):
    """The studio served on 127.0.0.1 on a free port, in a background thread."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture
def shoot(tmp_path):
    extra = os.environ.get("M6_SCREENSHOT_DIR")
    paths = []

    def save(driver, name):
        path = tmp_path / f"{name}.png"
        driver.save_screenshot(str(path))
        paths.append(path)
        if extra:
            os.makedirs(extra, exist_ok=True)
            shutil.copy(path, os.path.join(extra, path.name))
        return path

    save.paths = paths
    save.dir = tmp_path
    return save


def _wait(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _set_number(driver, selector: str, value):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, selector)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.TAB)


def _set_slider(driver, elem_id: str, value: int):
    _set_number(driver, f"#{elem_id} input[type=number]", value)


def _loaded_images(driver, selector: str):
    from selenium.webdriver.common.by import By

    imgs = driver.find_elements(By.CSS_SELECTOR, selector)
    return [im for im in imgs if driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", im)]


def _natural_size(driver, img):
    return tuple(driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img))


def _fetch(url: str) -> np.ndarray:
    """The image behind a page URL as float RGB (H, W, 3), at its own size."""
    assert url.startswith("http://127.0.0.1:"), url  # localhost only
    with urllib.request.urlopen(url, timeout=30) as r:
        return np.asarray(PIL.Image.open(io.BytesIO(r.read())).convert("RGB"), dtype=np.float32)


def _tab(driver, name: str):
    from selenium.webdriver.common.by import By

    next(b for b in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text.strip() == name).click()


def _body(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def _result(driver, gallery_id: str, what: str):
    """The first image of a results gallery once it has loaded; it must have the output's size."""
    img = _wait(lambda: _loaded_images(driver, f"#{gallery_id} img"), 120, what)[0]
    assert _natural_size(driver, img) == (W, H), what
    return _fetch(img.get_attribute("src"))


def _click_example(driver, row: int = 0):
    """Clicks a row of the test-split examples of the open tab."""
    from selenium.webdriver.common.by import By

    rows = _wait(lambda: [r for r in driver.find_elements(By.CSS_SELECTOR, "tr.tr-body") if r.is_displayed()], 30, "the examples")
    rows[row].click()


def _paint_rows(driver, canvas, fractions):
    """Horizontal brush strokes across the editor's image at heights given as fractions of the image (0 = top).

    The portrait canvas is zoomed to fit the drawing area's height and centred in it."""
    from selenium.webdriver.common.action_chains import ActionChains

    ih = canvas.size["height"] * 0.8  # a little inside the image's real height on the page
    iw = ih * W / H
    chain = ActionChains(driver)
    for f in fractions:
        chain.move_to_element_with_offset(canvas, int(-iw * 0.45), int(ih * (f - 0.5))).click_and_hold()
        for _ in range(3):
            chain.move_by_offset(int(iw * 0.3), 0)
        chain.release()
    chain.perform()
    time.sleep(0.5)


@pytest.mark.slow
def test_studio_in_chromium_drives_every_tab_at_the_output_size(browser, served, shoot):
    from selenium.webdriver.common.by import By

    d = browser
    d.get(served)
    prompt = _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#t2i-prompt textarea"), 60, "the page to load")[0]
    assert "M6-Fashion studio" in d.title
    assert f"The model makes {W}x{H} images" in _body(d)

    # ---- text to image: two results at their real size
    _set_slider(d, "t2i-steps", STEPS)
    _set_slider(d, "t2i-num", 2)
    prompt.send_keys("Men Navy Blue Casual Shirt")
    d.find_element(By.ID, "t2i-run").click()
    # the gallery's images load one by one: wait for both, not just the first
    generated = _wait(lambda: [ims for ims in [_loaded_images(d, "#t2i-gallery img")] if len(ims) >= 2], 120,
                      "two generated images in the gallery")[0]
    assert len(generated) == 2 and all(_natural_size(d, im) == (W, H) for im in generated)
    shoot(d, "01-generated")
    first = _fetch(generated[0].get_attribute("src"))
    assert first.shape == (H, W, 3)

    # ---- send it to inpainting; running without a painted mask shows the message, the app keeps serving
    d.find_element(By.ID, "t2i-to-inpaint").click()
    canvas = _wait(lambda: [c for c in d.find_elements(By.CSS_SELECTOR, "#inpaint-editor canvas") if c.is_displayed()],
                   30, "the inpainting canvas")[0]
    time.sleep(1.0)  # the editor draws the image into the canvas
    _set_slider(d, "inpaint-steps", STEPS)
    d.find_element(By.ID, "inpaint-run").click()
    _wait(lambda: "No mask painted" in _body(d), 30, "the 'No mask painted' message")
    assert "Traceback" not in _body(d)
    shoot(d, "02-no-mask-message")

    # ---- paint the lower part of the garment and inpaint it with a new description
    _paint_rows(d, canvas, (0.7, 0.7, 0.78, 0.86, 0.94))  # the first stroke after a new image can be dropped
    d.find_element(By.CSS_SELECTOR, "#inpaint-prompt textarea").send_keys("Men Red Casual Shirt")
    d.find_element(By.ID, "inpaint-run").click()
    result = _result(d, "inpaint-gallery", "the inpainted image")
    shoot(d, "03-inpainted")
    top, bottom = np.abs(result[:120] - first[:120]).mean(), np.abs(result[200:] - first[200:]).mean()
    assert top < 0.5, f"the unpainted upper part changed (mean difference {top:.2f}): the mask does not line up with the image"
    assert bottom > 2.0, f"the painted lower part did not change (mean difference {bottom:.2f})"

    # ---- reference patch: a test-split example fills the patch and the box; the preview shows the box on the output
    _tab(d, "Reference patch")
    _click_example(d, 0)
    preview = _wait(lambda: _loaded_images(d, "#ref-preview img"), 30, "the box preview")[0]
    assert _natural_size(d, preview) == (W, H)
    _set_slider(d, "ref-steps", STEPS)
    d.find_element(By.ID, "ref-run").click()
    _result(d, "ref-gallery", "the image edited with the patch")
    shoot(d, "04-reference-patch")
    # an unreadable upload (as the optional garment) gives a message in the page, not a stack trace
    bad = shoot.dir / "not_an_image.png"
    bad.write_bytes(b"this is not a PNG")
    _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#ref-base input[type=file]"), 30, "the garment upload")[0].send_keys(str(bad))
    time.sleep(1.0)
    d.find_element(By.ID, "ref-run").click()
    _wait(lambda: "Cannot read the uploaded file as an image" in _body(d), 30, "the unreadable-upload message")
    assert "Traceback" not in _body(d)
    shoot(d, "05-unreadable-upload-message")

    # ---- style mixing: the lower half of the second garment on the first (a test-split example row)
    _tab(d, "Style mixing")
    _click_example(d, 0)  # red T-shirt + striped polo, lower half
    _wait(lambda: [c for c in d.find_elements(By.CSS_SELECTOR, "#mix-base canvas") if c.is_displayed()], 30, "the base canvas")
    time.sleep(1.0)
    _set_slider(d, "mix-steps", STEPS)
    d.find_element(By.ID, "mix-run").click()
    mixed = _result(d, "mix-gallery", "the mixed image")
    shoot(d, "06-style-mixing")
    base, style = (np.asarray(_example(n), dtype=np.float32) for n in ("red_tshirt", "striped_polo"))
    assert np.abs(mixed[:96] - base[:96]).mean() < 3.0, "the upper half is not the base garment"
    assert np.abs(mixed[160:] - style[160:]).mean() < 0.5 * np.abs(mixed[160:] - base[160:]).mean(), \
        "the lower half does not come from the second garment"

    # ---- outpainting: the generated image placed in the centre box; a box off the image is explained
    _tab(d, "Text to image")
    d.find_element(By.ID, "t2i-to-outpaint").click()
    preview = _wait(lambda: _loaded_images(d, "#out-preview img"), 30, "the outpainting preview")[0]
    assert _natural_size(d, preview) == (W, H)
    _set_slider(d, "out-steps", STEPS)
    d.find_element(By.ID, "out-run").click()
    shown = _fetch(preview.get_attribute("src"))
    extended = _result(d, "out-gallery", "the outpainted image")
    shoot(d, "07-outpainted")
    inside = (slice(67, 189), slice(51, 141))  # the centre box (48, 64, 144, 192) without the preview's outline
    assert np.abs(extended[inside] - shown[inside]).max() <= 1, "the image is not where the preview shows it"
    placed = np.asarray(fit_to(PIL.Image.fromarray(first.astype(np.uint8)), 96, 128), dtype=np.float32)
    assert np.abs(extended[64:192, 48:144] - placed).max() <= 1, "the generated image is not in the centre box"
    _set_number(d, "#out-box-right input", 300)
    d.find_element(By.ID, "out-run").click()
    _wait(lambda: f"outside the {W}x{H} (width x height) image" in _body(d), 30, "the box message")
    shoot(d, "08-box-message")

    assert all(p.is_file() and p.stat().st_size > 10_000 for p in shoot.paths)
