"""Saved folders open through the third-party generic loaders, in fresh processes that never import m6_fashion:
`diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` and transformers'
`AutoConfig` / `AutoModel` / `AutoModelForMaskedLM` through the `auto_map` entry point; without the package
installed, both say in one error what to install."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from m6_fashion import M6FashionPipeline
from m6_fashion.default_model import resolve_model

SHIPPED = resolve_model("m6-fashion-64")[0]

# Makes `m6_fashion` unimportable in a child process, as on a machine without the package.
WITHOUT_PACKAGE = textwrap.dedent("""
    import sys
    class _NoM6Fashion:
        def find_spec(self, name, path=None, target=None):
            if name == "m6_fashion" or name.startswith("m6_fashion."):
                raise ModuleNotFoundError(f"No module named {name!r}")
    sys.meta_path.insert(0, _NoM6Fashion())
""")


def _child(code: str, *, without_package: bool = False) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter (nothing imported yet) and returns the finished process."""
    src = (WITHOUT_PACKAGE if without_package else "") + textwrap.dedent(code)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, env=env, timeout=300)


def _last_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_shipped_folder_loads_with_diffusers_generic_loader_and_generates_the_same_tokens():
    proc = _child(f"""
        import json, sys, torch
        from diffusers import DiffusionPipeline
        pipe = DiffusionPipeline.from_pretrained({SHIPPED!r}, trust_remote_code=True)
        out = pipe("Men Navy Blue Casual Shirt", num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                   height=64, width=64, output_type="tokens")
        print(json.dumps({{"cls": type(pipe).__module__ + "." + type(pipe).__name__,
                          "dtypes": sorted({{str(p.dtype) for m in pipe.components.values() if isinstance(m, torch.nn.Module)
                                           for p in m.parameters()}}),
                          "tokens": out.tokens.flatten().tolist()}}))
    """)
    got = _last_json(proc)
    assert got["cls"] == "m6_fashion.pipelines.pipeline_m6fashion.M6FashionPipeline"
    assert got["dtypes"] == ["torch.float32"]  # as the card says: stored in float16, loaded as float32
    pipe = M6FashionPipeline.from_pretrained("m6-fashion-64")
    want = pipe("Men Navy Blue Casual Shirt", num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                output_type="tokens").tokens
    assert got["tokens"] == want.flatten().tolist()


def test_generic_loader_refuses_without_trust_remote_code_and_names_the_package_when_missing():
    no_trust = _child(f"""
        from diffusers import DiffusionPipeline
        DiffusionPipeline.from_pretrained({SHIPPED!r})
    """)
    assert no_trust.returncode != 0 and "trust_remote_code=True" in no_trust.stderr
    missing = _child(f"""
        from diffusers import DiffusionPipeline
        DiffusionPipeline.from_pretrained({SHIPPED!r}, trust_remote_code=True)
    """, without_package=True)
    assert missing.returncode != 0
    last = missing.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError") and "pip install m6-fashion" in last, last


def test_save_pretrained_writes_the_entry_points_and_both_loaders_read_it(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == ["m6_fashion_pipeline", "M6FashionPipeline"]
    assert (tmp_path / "m6_fashion_pipeline.py").is_file() and (tmp_path / "transformer" / "modeling_m6fashion.py").is_file()
    manifest = (tmp_path / "checksums.sha256").read_text()
    assert "  m6_fashion_pipeline.py" in manifest and "  transformer/modeling_m6fashion.py" in manifest  # executed code is checked
    # the package's own loader needs neither trust_remote_code nor the entry file
    (tmp_path / "m6_fashion_pipeline.py").rename(tmp_path / "moved.py")
    with pytest.raises(ValueError, match="m6_fashion_pipeline.py is missing"):  # ... but the manifest notices it
        M6FashionPipeline.from_pretrained(str(tmp_path))
    (tmp_path / "moved.py").rename(tmp_path / "m6_fashion_pipeline.py")
    loaded = M6FashionPipeline.from_pretrained(str(tmp_path))
    assert type(loaded) is M6FashionPipeline
    proc = _child(f"""
        import json
        from diffusers import DiffusionPipeline
        pipe = DiffusionPipeline.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        print(json.dumps({{"cls": type(pipe).__name__, "grid": pipe.grid_size}}))
    """)
    assert _last_json(proc) == {"cls": "M6FashionPipeline", "grid": tiny_pipeline.grid_size}


def test_transformer_folder_loads_with_auto_classes_through_auto_map():
    folder = os.path.join(SHIPPED, "transformer")
    proc = _child(f"""
        import json
        from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM
        cfg = AutoConfig.from_pretrained({folder!r}, trust_remote_code=True)
        model = AutoModel.from_pretrained({folder!r}, trust_remote_code=True)
        mlm = AutoModelForMaskedLM.from_pretrained({folder!r}, trust_remote_code=True)
        as_stored = AutoModel.from_pretrained({folder!r}, trust_remote_code=True, dtype="auto")
        print(json.dumps({{"cfg": type(cfg).__name__, "model": type(model).__module__ + "." + type(model).__name__,
                          "mlm": type(mlm).__name__, "dtype": str(model.dtype), "stored": str(as_stored.dtype),
                          "layers": cfg.num_hidden_layers}}))
    """)
    got = _last_json(proc)
    assert got["model"] == "m6_fashion.models.transformer_m6fashion.M6FashionTransformer"
    assert got["cfg"] == "M6FashionConfig" and got["mlm"] == "M6FashionTransformer"
    assert got["dtype"] == "torch.float32" and got["stored"] == "torch.float16"
    want = json.loads(open(os.path.join(folder, "config.json")).read())["num_hidden_layers"]
    assert got["layers"] == want
    no_trust = _child(f"""
        from transformers import AutoModel
        AutoModel.from_pretrained({folder!r})
    """)
    assert no_trust.returncode != 0 and "trust_remote_code" in no_trust.stderr
    missing = _child(f"""
        from transformers import AutoModel
        AutoModel.from_pretrained({folder!r}, trust_remote_code=True)
    """, without_package=True)
    assert missing.returncode != 0 and "pip install m6-fashion" in missing.stderr, missing.stderr[-2000:]


def test_hub_id_loads_with_both_generic_loaders_from_the_hub_cache(tiny_pipeline, tmp_path):
    """A Hub id resolves through huggingface_hub's cache (offline, as after a download): the repo holds what
    `push_to_hub` commits, i.e. the `save_pretrained` folder."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--user--m6-fashion-tiny"
    tiny_pipeline.save_pretrained(repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    proc = _child(f"""
        import json, os
        os.environ["HF_HUB_CACHE"] = {str(tmp_path / "hub")!r}
        from diffusers import DiffusionPipeline
        from transformers import AutoModel
        pipe = DiffusionPipeline.from_pretrained("user/m6-fashion-tiny", trust_remote_code=True)
        model = AutoModel.from_pretrained("user/m6-fashion-tiny", subfolder="transformer", trust_remote_code=True)
        print(json.dumps({{"pipe": type(pipe).__name__, "model": type(model).__name__, "dtype": str(model.dtype)}}))
    """)
    assert _last_json(proc) == {"pipe": "M6FashionPipeline", "model": "M6FashionTransformer", "dtype": "torch.float32"}


def test_shipped_entry_points_are_the_package_source():
    """The shipped folder's entry files hold `m6_fashion/hub_entry.py` (in the repository they link to it), as
    `save_pretrained` writes them; they cannot drift."""
    from m6_fashion import hub_entry

    for copy in (os.path.join(SHIPPED, "m6_fashion_pipeline.py"), os.path.join(SHIPPED, "transformer", "modeling_m6fashion.py")):
        assert open(hub_entry.__file__, "rb").read() == open(copy, "rb").read(), f"{copy} differs: re-save the shipped model"
