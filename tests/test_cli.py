"""The m6-fashion command line writes PNGs with the shipped model, reports bad input clearly, follows the
usual conventions (python -m, --version, help listing every command, exit status 2 for usage errors) and
starts without importing torch, diffusers or transformers."""

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import PIL.Image
import pytest

from conftest import subprocess_env

# every command of the command line, written out here (not read from cli.py) so a dropped one is caught
ALL_COMMANDS = ["generate", "inpaint", "outpaint", "edit", "mix", "train-tokenizer", "train-transformer",
                "finetune", "evaluate", "export", "studio"]
HEAVY = ("torch", "diffusers", "transformers")


def _cli(*args, module="m6_fashion"):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=subprocess_env(), timeout=300)


def _python(code: str):
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       env=subprocess_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def files(real_images, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    a, b = real_images[0]["image"], real_images[1]["image"]
    a.save(d / "a.png"); b.save(d / "b.png")
    mask = PIL.Image.new("L", a.size, 0)
    mask.paste(255, (0, a.size[1] // 2, a.size[0], a.size[1]))
    mask.save(d / "mask.png")
    return d


def test_generate_edit_inpaint_mix_outpaint_write_pngs(files):
    d = files
    commands = {
        "gen": ["generate", "--prompt", "Men Navy Blue Casual Shirt", "--seed", "0", "--steps", "2", "--num-images", "2"],
        "inp": ["inpaint", "--image", str(d / "a.png"), "--mask", str(d / "mask.png"), "--prompt", "Men Red Shirt", "--steps", "2"],
        "edit": ["edit", "--reference", str(d / "b.png"), "--box", "0", "0", "32", "32", "--prompt", "Men Shoes", "--steps", "2"],
        "mix": ["mix", "--image", str(d / "a.png"), "--style-image", str(d / "b.png"), "--mask", str(d / "mask.png"), "--steps", "2"],
        "out": ["outpaint", "--image", str(d / "a.png"), "--box", "16", "16", "48", "48", "--steps", "2", "--size", "128", "--bf16"],
        "small": ["generate", "--model", "m6-fashion-64", "--steps", "2", "--height", "64", "--width", "48"],
    }
    sizes = {"out": (96, 128), "small": (48, 64)}  # --size scales the long side; the default is 192x256
    # one process for all of them would be faster, but each command is what a user types
    for name, cmd in commands.items():
        out = d / f"{name}.png"
        r = _cli(*cmd, "--out", str(out))
        assert r.returncode == 0, (name, r.stderr[-2000:])
        assert PIL.Image.open(out).size == sizes.get(name, (192, 256)), name
    assert (d / "gen-1.png").is_file()


def test_bad_input_gives_a_clear_error(files):
    r = _cli("inpaint", "--image", str(files / "missing.png"), "--mask", str(files / "mask.png"), "--out", str(files / "x.png"))
    assert r.returncode != 0 and "does not exist" in r.stderr
    r = _cli("edit", "--reference", str(files / "b.png"), "--box", "0", "0", "199", "99", "--out", str(files / "x.png"), "--steps", "1")
    assert r.returncode != 0 and "outside" in r.stderr and "Traceback" not in r.stderr
    r = _cli("generate", "--height", "100", "--out", str(files / "x.png"), "--steps", "1")
    assert r.returncode != 0 and "cannot make a height=100" in r.stderr and "accepted" in r.stderr
    assert "Traceback" not in r.stderr and not (files / "x.png").exists()
    r = _cli("generate", "--width", "5000", "--out", str(files / "x.png"))
    assert r.returncode != 0 and "--width 5000 is too large" in r.stderr


def test_python_m_m6_fashion_is_the_command_line():
    r = _cli("--help")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("usage: m6-fashion ")
    assert r.stdout == _cli("--help", module="m6_fashion.cli").stdout
    script = shutil.which("m6-fashion", path=str(Path(sys.executable).parent))
    if script:  # the installed console script, when this interpreter's environment has one
        s = subprocess.run([script, "--help"], capture_output=True, text=True, env=subprocess_env(), timeout=300)
        assert s.returncode == 0 and s.stdout == r.stdout
    r = _cli("nope")  # errors and exit statuses go through the same main()
    assert r.returncode == 2 and "invalid choice: 'nope'" in r.stderr


def test_version():
    r = _cli("--version")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == f"m6-fashion {importlib.metadata.version('m6-fashion')}\n"


def test_version_falls_back_to_the_package_version(monkeypatch):
    import m6_fashion
    from m6_fashion import cli

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert cli.version() == m6_fashion.__version__


def test_help_lists_every_command_with_a_one_line_description():
    r = _cli("--help")
    assert r.returncode == 0
    listed = dict(re.findall(r"^ {4}(\S+) {2,}(\S.*)$", r.stdout, flags=re.M))
    assert list(listed) == ALL_COMMANDS, r.stdout
    lines = r.stdout.splitlines()
    for name, description in listed.items():
        i = next(i for i, line in enumerate(lines) if line.startswith(f"    {name} "))
        # the description is the whole of it: the next line is the next command (or the end of the list)
        assert not lines[i + 1].startswith(" " * 6), (name, lines[i + 1])
        assert len(description) > 10


def test_command_group_without_subcommand_prints_its_help_and_exits_2():
    r = _cli("export")
    assert r.returncode == 2
    assert r.stderr.startswith("usage: m6-fashion export") and re.search(r"^ +onnx +\S", r.stderr, flags=re.M), r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr
    r = _cli("export", "--help")
    assert r.returncode == 0 and "onnx" in r.stdout
    r = _cli()  # no command at all: the top-level help, status 2
    assert r.returncode == 2 and r.stderr.startswith("usage: m6-fashion") and "    generate " in r.stderr


def test_help_and_argument_errors_import_no_heavy_module(tmp_path):
    (tmp_path / "mask.png").write_bytes(b"")  # never read: the missing --image stops the command first
    argvs = [
        ["--help"], ["--version"], ["export"], ["export", "--help"],
        *[[c, "--help"] for c in ("generate", "inpaint", "outpaint", "edit", "mix")],
        ["generate"], ["generate", "--out", "x.png", "--steps", "0"], ["nope"], ["export", "bogus"],
        ["inpaint", "--image", str(tmp_path / "missing.png"), "--mask", str(tmp_path / "mask.png"), "--out", "x.png"],
        ["generate", "--model", str(tmp_path / "no-such-model"), "--out", "x.png"],
    ]
    out = _python(f"""
        import contextlib, io, json, sys
        import m6_fashion.cli
        after_import = sorted(m for m in {HEAVY!r} if m in sys.modules)
        codes = []
        for argv in {argvs!r}:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                try:
                    m6_fashion.cli.main(argv)
                    codes.append(0)
                except SystemExit as e:
                    codes.append(e.code if isinstance(e.code, int) else 1)
        print(json.dumps({{"after_import": after_import, "codes": codes,
                          "after_commands": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
    """)
    assert out["after_import"] == [] and out["after_commands"] == [], out
    assert out["codes"] == [0, 0, 2, 0] + [0] * 5 + [2, 2, 2, 2, 1, 1], out["codes"]


def test_package_names_are_lazy_and_all_still_importable():
    out = _python("""
        import json, sys
        import m6_fashion
        lazy = not any(m in sys.modules for m in ("torch", "diffusers", "transformers"))
        from m6_fashion import M6FashionPipeline, M6FashionConfig
        from m6_fashion import default_model  # submodules still import with `from m6_fashion import ...`
        resolved = {name: getattr(m6_fashion, name).__name__ for name in m6_fashion.__all__}
        try:
            m6_fashion.NoSuchName
            missing = "no error"
        except AttributeError as e:
            missing = str(e)
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
        print(json.dumps({"lazy": lazy, "resolved": resolved, "missing": missing, "in_dir": sorted(set(m6_fashion.__all__) - set(dir(m6_fashion))),
                          "registered": "m6fashion" in CONFIG_MAPPING, "pipeline": M6FashionPipeline.__module__}))
    """)
    assert out["lazy"] is True
    assert len(out["resolved"]) == 12 and all(k == v for k, v in out["resolved"].items()), out["resolved"]
    assert "NoSuchName" in out["missing"] and out["in_dir"] == []
    assert out["registered"] and out["pipeline"] == "m6_fashion.pipelines.pipeline_m6fashion"


def test_transformers_imported_first_registers_the_model_type_on_import():
    out = _python("""
        import json
        import transformers
        import m6_fashion
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
        print(json.dumps({"registered": "m6fashion" in CONFIG_MAPPING}))
    """)
    assert out["registered"] is True


@pytest.mark.parametrize("argv", [
    ["generate"],                                              # required --out missing
    ["generate", "--out", "x.png", "--steps", "ten"],          # not an int
    ["generate", "--out", "x.png", "--num-images", "0"],       # not positive
    ["outpaint", "--image", "a.png", "--box", "1", "2", "--out", "x.png"],  # --box needs 4 numbers
    ["generate", "--out", "x.png", "--no-such-option"],
    ["nope"],
    ["export", "bogus"],
    ["generate", "--model", "./no-such-model-folder", "--out", "x.png"],
], ids=lambda a: " ".join(a))
def test_bad_arguments_give_one_error_line(argv):
    r = _cli(*argv)
    assert r.returncode != 0 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr


def _cli_error(tmp_path, *argv):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "m6_fashion", *argv], capture_output=True, text=True, cwd=tmp_path)
    return out.returncode, out.stderr


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    target = tmp_path / "shirt.png"
    target.write_bytes(b"precious")
    rc, err = _cli_error(tmp_path, "generate", "--prompt", "shirt", "--out", str(target), "--steps", "1")
    assert rc != 0 and "--overwrite" in err and "Traceback" not in err
    assert target.read_bytes() == b"precious"
    rc, err = _cli_error(tmp_path, "generate", "--prompt", "shirt", "--out", str(target), "--steps", "1", "--overwrite")
    assert rc == 0, err
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--out", "o.xyz"], ".png"),
        (["--out", "o.png", "--size", "100000"], "--size"),
        (["--out", "o.png", "--num-images", "500"], "--num-images"),
        (["--out", "afile/o.png"], "is a file, not a folder"),
    ],
)
def test_bad_outputs_are_refused_before_loading(tmp_path, extra, match):
    """--model is an empty folder: had the model been loaded first, the error would be about the model."""
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty-model").mkdir()
    rc, err = _cli_error(tmp_path, "generate", "--model", str(tmp_path / "empty-model"), "--prompt", "shirt", *extra)
    assert rc != 0 and match in err and "Traceback" not in err, err
