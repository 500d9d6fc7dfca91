"""The studio (Gradio app) with the shipped model: its handlers directly, and the real page in headless Chromium.

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
from m6_fashion.studio import Studio, build_app, load_examples, painted_mask, parse_box, preset_mask  # noqa: E402

STEPS = 2  # few SMART passes keep every call quick on CPU


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


# ---------------------------------------------------------------------------------------------- handlers
def test_text_to_image_returns_images_reproducibly(studio):
    gallery, images = studio.text_to_image("Women Pink Top", 3, STEPS, 2)
    assert len(gallery) == 2 and len(images) == 2
    assert all(im.size == (64, 64) for im in images)
    assert all(item[0].size == (256, 256) and "seed 3" in item[1] for item in gallery)
    again = studio.text_to_image("Women Pink Top", 3, STEPS, 2)[1]
    other = studio.text_to_image("Women Pink Top", 4, STEPS, 2)[1]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again))
    assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, other))


def test_inpainting_changes_only_the_masked_region(studio, shirt):
    layer = PIL.Image.new("RGBA", (256, 256))
    layer.paste((255, 42, 109, 255), (0, 128, 256, 256))  # paint the lower half
    editor = {"background": shirt.resize((256, 256), PIL.Image.BICUBIC), "layers": [layer], "composite": None}
    _, images = studio.inpaint(editor, "Men Red Casual Shirt", "painted", 1, STEPS)
    original = np.asarray(studio_mod.to_canvas(editor["background"], 64), dtype=np.int16)
    edited = np.asarray(images[0], dtype=np.int16)
    assert np.array_equal(edited[:32], original[:32])  # the unpainted half is kept pixel for pixel
    assert np.abs(edited[32:] - original[32:]).mean() > 1.0  # the painted half was regenerated


def test_every_tab_runs(studio, shirt):
    other = studio.text_to_image("Men Red T-shirt", 1, STEPS, 1)[1][0]
    runs = {
        "mix": studio.style_mix({"background": shirt, "layers": [], "composite": shirt}, other, "lower half", 0, STEPS),
        "outpaint": studio.outpaint(shirt, 16, 16, 48, 48, "", 0, STEPS),
        "reference": studio.reference_edit(other, 16, 8, 48, 32, "Men Shirt", None, 0, STEPS),
        "reference on a garment": studio.reference_edit(other, 16, 8, 48, 32, "", shirt, 0, STEPS),
    }
    for name, (gallery, images) in runs.items():
        assert len(images) == 1 and images[0].size == (64, 64), name
        assert gallery[0][0].size == (256, 256), name


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
        (lambda s, im: s.outpaint(im, 0, 0, 70, 40, "", 0, STEPS), "outside the 64x64 canvas"),
        (lambda s, im: s.outpaint(im, 0, 0, 64, 64, "", 0, STEPS), "whole canvas"),
        (lambda s, im: s.outpaint(im, 10, None, 40, 40, "", 0, STEPS), "top is empty"),
        (lambda s, im: s.reference_edit(im, 40, 10, 20, 40, "", None, 0, STEPS), "outside the 64x64 canvas or empty"),
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
    with pytest.raises(gr.Error, match="Cannot read the reference patch"):
        studio.reference_edit(str(bad), 0, 0, 32, 32, "", None, 0, STEPS)


def test_masks_and_boxes():
    stroke = PIL.Image.new("RGBA", (256, 256))
    stroke.paste((255, 0, 0, 255), (100, 200, 101, 201))  # a single painted pixel still marks its cell
    mask = np.asarray(painted_mask({"background": None, "layers": [stroke], "composite": None}, 64))
    assert mask.sum() == 255 and mask[50, 25] == 255
    assert painted_mask({"background": None, "layers": [PIL.Image.new("RGBA", (256, 256))], "composite": None}, 64) is None
    assert painted_mask(None, 64) is None
    assert np.asarray(preset_mask("lower half", 64))[32:].min() == 255 and np.asarray(preset_mask("lower half", 64))[:32].max() == 0
    assert parse_box(0, 16.0, "64", 48, 64) == (0, 16, 64, 48)
    with pytest.raises(gr.Error, match="whole number"):
        parse_box(0, 1.5, 10, 10, 64)


def test_examples_come_from_the_test_split_and_the_app_starts_without_them(monkeypatch, studio):
    examples = load_examples()
    assert len(examples) >= 4 and all(os.path.isfile(e["path"]) and e["caption"] for e in examples)
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


def _set_slider(driver, elem_id: str, value: int):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.TAB)


def _loaded_images(driver, selector: str):
    from selenium.webdriver.common.by import By

    imgs = driver.find_elements(By.CSS_SELECTOR, selector)
    return [im for im in imgs if driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", im)]


def _fetch(url: str) -> np.ndarray:
    assert url.startswith("http://127.0.0.1:"), url  # localhost only
    with urllib.request.urlopen(url, timeout=30) as r:
        return np.asarray(PIL.Image.open(io.BytesIO(r.read())).convert("RGB").resize((64, 64), PIL.Image.BOX), dtype=np.float32)


@pytest.mark.slow
def test_studio_in_chromium_generates_and_inpaints(browser, served, shoot):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    d = browser
    d.get(served)
    prompt = _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#t2i-prompt textarea"), 60, "the page to load")[0]
    assert "M6-Fashion studio" in d.title

    # ---- text to image
    _set_slider(d, "t2i-steps", STEPS)
    _set_slider(d, "t2i-num", 2)
    prompt.send_keys("Men Navy Blue Casual Shirt")
    d.find_element(By.ID, "t2i-run").click()
    # the gallery's images load one by one: wait for both, not just the first
    generated = _wait(lambda: [ims for ims in [_loaded_images(d, "#t2i-gallery img")] if len(ims) >= 2], 120,
                      "two generated images in the gallery")[0]
    assert len(generated) == 2
    assert d.execute_script("return arguments[0].naturalWidth", generated[0]) == 256
    shoot(d, "01-generated")
    first = _fetch(generated[0].get_attribute("src"))

    # ---- send it to inpainting; running without a painted mask shows the message, the app keeps serving
    d.find_element(By.ID, "t2i-to-inpaint").click()
    canvas = _wait(lambda: [c for c in d.find_elements(By.CSS_SELECTOR, "#inpaint-editor canvas") if c.is_displayed()],
                   30, "the inpainting canvas")[0]
    time.sleep(1.0)  # the editor draws the image into the canvas
    _set_slider(d, "inpaint-steps", STEPS)
    d.find_element(By.ID, "inpaint-run").click()
    _wait(lambda: "No mask painted" in d.find_element(By.TAG_NAME, "body").text, 30, "the 'No mask painted' message")
    assert "Traceback" not in d.find_element(By.TAG_NAME, "body").text
    shoot(d, "02-no-mask-message")

    # ---- paint the lower part of the garment and inpaint it with a new description
    w, h = canvas.size["width"], canvas.size["height"]
    side = min(w, h) * 0.8  # the 256 px editing canvas is centred in the drawing area
    chain = ActionChains(d)
    for dy in (0.12, 0.22, 0.32, 0.42):
        chain.move_to_element_with_offset(canvas, int(-side * 0.45), int(side * dy)).click_and_hold()
        chain.move_by_offset(int(side * 0.3), 0).move_by_offset(int(side * 0.3), 0).move_by_offset(int(side * 0.3), 0).release()
    chain.perform()
    time.sleep(0.5)
    d.find_element(By.CSS_SELECTOR, "#inpaint-prompt textarea").send_keys("Men Red Casual Shirt")
    d.find_element(By.ID, "inpaint-run").click()
    edited = _wait(lambda: _loaded_images(d, "#inpaint-gallery img"), 120, "the inpainted image")
    shoot(d, "03-inpainted")
    result = _fetch(edited[0].get_attribute("src"))
    top, bottom = np.abs(result[:24] - first[:24]).mean(), np.abs(result[40:] - first[40:]).mean()
    assert bottom > top + 2.0, f"the painted lower part did not change more than the rest (top {top:.1f}, bottom {bottom:.1f})"

    # ---- an unreadable upload gives a message in the page, not a stack trace
    bad = shoot.dir / "not_an_image.png"
    bad.write_bytes(b"this is not a PNG")
    next(b for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text.strip() == "Outpainting").click()
    _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#out-image input[type=file]"), 30, "the outpainting upload")[0].send_keys(str(bad))
    time.sleep(1.0)
    d.find_element(By.ID, "out-run").click()
    _wait(lambda: "Cannot read the uploaded file as an image" in d.find_element(By.TAG_NAME, "body").text, 30,
          "the unreadable-upload message")
    assert "Traceback" not in d.find_element(By.TAG_NAME, "body").text
    shoot(d, "04-unreadable-upload-message")
    assert all(p.is_file() and p.stat().st_size > 10_000 for p in shoot.paths)
