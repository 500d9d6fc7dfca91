"""push_to_hub and model cards through huggingface_hub's real create_repo / upload_folder / create_commit code.

Only the HTTP layer is replaced: huggingface_hub's shared client gets a mock transport (`set_client_factory`)
that answers like the Hub (create, validate-yaml, preupload, commit) and records every request, so file
selection, the preupload and ndjson commit payloads and the README's YAML check all run as in a real push.
Nothing leaves the machine.
"""

import base64
import importlib
import json
import struct
from pathlib import Path

import pytest
import torch

from m6_fashion import M6FashionPipeline

REPO = "user/m6-fashion-test"
RESULTS_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "results"  # the published evaluation reports
ENDPOINT_HOST = "https://huggingface.co"
FAKE_OID = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """The few Hub endpoints a push uses; requests and commits are recorded."""

    def __init__(self):
        self.requests, self.commits, self.preuploads, self.validated = [], [], [], []

    def __call__(self, request):
        from huggingface_hub import ModelCard

        Response = importlib.import_module(type(request).__module__.split(".")[0]).Response  # httpx or httpx2
        path, params = request.url.path, dict(request.url.params)
        self.requests.append((request.method, path, params))
        if path == "/api/repos/create":
            body = json.loads(request.content)
            repo = f"{body['organization']}/{body['name']}" if body.get("organization") else f"user/{body['name']}"
            return Response(200, json={"url": f"{ENDPOINT_HOST}/{repo}", "name": repo})
        if path == "/api/validate-yaml":
            content = json.loads(request.content)["content"]
            try:  # the Hub refuses a commit whose README metadata does not parse; huggingface_hub's parser stands in
                card = ModelCard(content, ignore_metadata_errors=False)
                assert card.data.to_dict(), "empty metadata"
            except Exception as e:  # noqa: BLE001
                return Response(400, json={"errors": [{"message": str(e)}]})
            self.validated.append(content)
            return Response(200, json={"errors": [], "warnings": []})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            self.preuploads.append((path, params, [f["path"] for f in files]))
            return Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                 for f in files]})
        if "/commit/" in path:
            lines = [json.loads(line) for line in request.content.decode().splitlines() if line]
            header = next(x["value"] for x in lines if x["key"] == "header")
            files = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines if x["key"] == "file"}
            assert not [x for x in lines if x["key"] not in ("header", "file")], "only regular additions expected"
            self.commits.append({"path": path, "params": params, "header": header, "files": files})
            repo = path.split("/api/models/")[1].split("/commit/")[0]
            return Response(200, json={"commitUrl": f"{ENDPOINT_HOST}/{repo}/commit/{FAKE_OID}", "commitOid": FAKE_OID,
                                       "pullRequestUrl": f"{ENDPOINT_HOST}/{repo}/discussions/1"})
        return Response(404, json={"error": f"the fake Hub has no route {request.method} {path}"})


@pytest.fixture
def fake_hub():
    import huggingface_hub
    from huggingface_hub.utils import _http

    previous = _http._GLOBAL_CLIENT_FACTORY
    hub = FakeHub()
    http = importlib.import_module(type(huggingface_hub.get_session()).__module__.split(".")[0])  # httpx or httpx2
    huggingface_hub.set_client_factory(lambda: http.Client(transport=http.MockTransport(hub), follow_redirects=True))
    try:
        yield hub
    finally:
        huggingface_hub.set_client_factory(previous)


def _header(blob: bytes) -> dict:
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    header.pop("__metadata__", None)
    return header


def _card(files):
    from huggingface_hub import ModelCard

    return ModelCard(files["README.md"].decode(), ignore_metadata_errors=False)


def _check_card_describes(card, files, variant=None):
    """The card's weights table lists exactly the committed safetensors, with their dtypes, values and bytes."""
    weights = {p: b for p, b in files.items() if p.endswith(".safetensors")}
    rows = [line for line in card.text.splitlines() if line.startswith("| `")]
    assert len(rows) == len(weights)
    names = {"F16": "float16", "F32": "float32", "BF16": "bfloat16", "BOOL": "bool", "I64": "int64"}
    for row in rows:
        file, dtypes, values, size = [c.strip().strip("`") for c in row.strip("|").split("|")]
        header = _header(weights[file])
        assert dtypes == ", ".join(sorted({names[t["dtype"]] for t in header.values()}))
        assert int(size.replace(",", "")) == len(weights[file])
        count = sum(torch.Size(t["shape"]).numel() for t in header.values())
        assert int(values.replace(",", "")) == count
    if variant:
        assert f'variant="{variant}"' in card.text


def test_push_fp16_variant_as_a_pull_request(tiny_pipeline, fake_hub, tmp_path):
    before = {n: p.detach().clone() for n, p in tiny_pipeline.transformer.named_parameters()}
    info = tiny_pipeline.push_to_hub(REPO, token="hf_fake", variant="fp16", create_pr=True, revision="dev",
                                     commit_message="fp16 weights")
    expected = ["/api/repos/create", "/api/validate-yaml", f"/api/models/{REPO}/preupload/dev", f"/api/models/{REPO}/commit/dev"]
    assert [p for _, p, _ in fake_hub.requests if p in expected] == expected
    assert all(m == "GET" for m, p, _ in fake_hub.requests if p not in expected)  # nothing else is written
    (commit,) = fake_hub.commits
    assert commit["params"].get("create_pr") == "1" and fake_hub.preuploads[0][1].get("create_pr") == "1"
    assert commit["header"]["summary"] == "fp16 weights" and info.pr_url.endswith("/discussions/1")
    files = commit["files"]
    weights = [f for f in files if f.endswith(".safetensors")]
    assert {"README.md", "model_index.json", "checksums.sha256"} <= set(files)
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)
    for comp in ("image_tokenizer", "decoder", "transformer"):
        assert any(f.startswith(comp + "/") for f in weights), comp
    assert weights and all(".fp16." in f or f.endswith(".fp16.safetensors") for f in weights), weights
    for f in weights:
        dtypes = {t["dtype"] for t in _header(files[f]).values()}
        assert "F32" not in dtypes and "F16" in dtypes, (f, dtypes)
    card = _card(files)
    assert card.data.library_name == "m6-fashion" and card.data.language == "en"
    assert card.data.pipeline_tag == "text-to-image" and all("/" in d for d in card.data.datasets)
    assert not card.data.eval_results  # not the shipped model: no model-index
    assert fake_hub.validated == [files["README.md"].decode()]
    _check_card_describes(card, files, variant="fp16")
    # the pipeline itself is unchanged, and the pushed folder loads back (its checksum manifest holds)
    assert all(torch.equal(p, before[n]) for n, p in tiny_pipeline.transformer.named_parameters())
    for path, blob in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(blob)
    loaded = M6FashionPipeline.from_pretrained(tmp_path, variant="fp16")
    for n, p in loaded.transformer.named_parameters():
        assert torch.equal(p, before[n].half().float()), n


def test_push_default_is_float_weights_without_variant(tiny_pipeline, fake_hub):
    tiny_pipeline.push_to_hub(REPO, token="hf_fake", model_card="# My card\n\nSome words.\n")
    (commit,) = fake_hub.commits
    assert "create_pr" not in commit["params"] and commit["path"] == f"/api/models/{REPO}/commit/main"
    assert commit["header"]["summary"] == "Upload M6FashionPipeline"
    files = commit["files"]
    assert not any(".fp16." in f for f in files)
    card = _card(files)
    assert card.text.lstrip().startswith("# My card") and card.data.library_name == "m6-fashion"
    _check_card_describes(card, files)


def test_push_refuses_pickle_before_any_request(tiny_pipeline, fake_hub):
    with pytest.raises(ValueError, match="safetensors only"):
        tiny_pipeline.push_to_hub(REPO, token="hf_fake", safe_serialization=False)
    assert fake_hub.requests == []


def test_shipped_model_card_has_model_index(tiny_pipeline, fake_hub, monkeypatch):
    """The shipped model's card carries model-index results from benchmarks/results (pushing the real 42 MB
    folder is left to the device run; here the tiny pipeline stands in under the shipped name)."""
    import m6_fashion.hub as hub

    report = json.loads((RESULTS_DIR / "evaluate_m6-fashion-hr_test.json").read_text())
    monkeypatch.setattr(hub, "shipped_model_name", lambda name_or_path, has_hr: "m6-fashion-hr")
    tiny_pipeline.push_to_hub(REPO, token="hf_fake")
    card = _card(fake_hub.commits[0]["files"])
    results = {(r.metric_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert card.data.model_name == "m6-fashion-hr"
    hr = report["text_to_image"]["hr"]
    assert results[("fid", "FID (Inception-v3, vs the real test photos)")] == round(hr["fid_inception"], 2)
    assert results[("kid", "KID mean (Inception-v3, subsets of 100)")] == round(hr["kid_inception_mean"], 4)
    assert results[("accuracy", "attribute hit rate (mean of the three), attribute classifier")] == round(hr["hit_rate"]["mean"], 4)
    assert all(r.dataset_type == hub.DATASETS[0] and r.task_type == "text-to-image" for r in card.data.eval_results)
    assert "model-index:" in fake_hub.validated[0]


def test_shipped_eval_results_are_the_published_evaluation():
    """The shipped folder's eval_results.json (package data, what model-index reports) summarises the published
    evaluation report exactly; regenerate it with `hub.write_shipped_eval_results(report)` after a new evaluation."""
    import m6_fashion.hub as hub
    from m6_fashion.default_model import shipped_folder

    report = json.loads((RESULTS_DIR / "evaluate_m6-fashion-hr_test.json").read_text())
    shipped = json.loads((Path(shipped_folder()) / hub.SHIPPED_RESULTS_FILE).read_text())
    assert shipped == hub.summarize_hr_evaluation(report)


def test_model_index_omitted_without_results(tmp_path):
    import m6_fashion.hub as hub

    assert hub.shipped_eval_results("m6-fashion-hr", results_file=tmp_path / "none.json") is None
    assert hub.shipped_eval_results("m6-fashion-64") is None
    card = hub.build_model_card("# x\n", model_name="m6-fashion-hr", eval_results=None)
    assert "model-index" not in str(card) and card.data.language == "en"


def test_shipped_folder_is_recognised():
    from m6_fashion.default_model import shipped_folder
    from m6_fashion.hub import shipped_model_name

    assert shipped_model_name(shipped_folder(), True) == "m6-fashion-hr"
    assert shipped_model_name(shipped_folder(), False) == "m6-fashion-64"
    assert shipped_model_name("user/other", True) is None


def test_finetune_card_uses_the_same_template(tiny_pipeline, tmp_path):
    from m6_fashion.hub import HUB_METADATA, build_model_card
    from m6_fashion.training.finetune import FinetuneArguments, _model_card

    tiny_pipeline.save_pretrained(tmp_path)
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-5" / "model.safetensors").write_bytes((tmp_path / "transformer" / "model.safetensors").read_bytes())
    from huggingface_hub import ModelCard

    text = _model_card(FinetuneArguments(data="d"), "user/base-model", 10, 2, {"eval_masked_accuracy": 0.5}, folder=str(tmp_path))
    card = ModelCard(text, ignore_metadata_errors=False)
    assert "# M6-Fashion, fine-tuned" in card.text and "Held-out masked-token accuracy: 0.5000." in card.text
    assert card.data.base_model == "user/base-model" and "fine-tuned" in card.data.tags
    shipped = build_model_card("# y\n")
    for key in HUB_METADATA:
        if key != "tags":
            assert card.data.to_dict()[key] == shipped.data.to_dict()[key], key
    assert "checkpoint-5" not in card.text  # only what is uploaded is described
    files = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*.safetensors") if "checkpoint" not in str(p)}
    _check_card_describes(card, files)
