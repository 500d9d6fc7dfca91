"""This package's own models refuse weights that do not match their config (transformers and diffusers
would only warn and fill the gaps with random weights)."""

import json

import pytest
import torch

from m6_fashion import M6FashionConfig, M6FashionTransformer, PQTokenizer, StyleDecoder


def _edit(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _tiny_models():
    torch.manual_seed(0)
    return {
        "decoder": StyleDecoder(latent_channels=8, style_channels=8, block_out_channels=(8, 8, 8)),
        "tokenizer": PQTokenizer(block_out_channels=(8, 8, 8), latent_channels=8, codebook_size=16),
        "transformer": M6FashionTransformer(M6FashionConfig(vocab_size=20, grid_size=4, num_hidden_layers=2, hidden_size=16,
                                                            num_attention_heads=2, intermediate_size=32, codebook_size=16)),
    }


@pytest.mark.parametrize(
    "name, changes, match",
    [
        ("decoder", {"layers_per_block": 3}, "missing keys: levels.0.2"),
        ("decoder", {"mapping_layers": 1}, "unexpected keys: mapping"),
        ("transformer", {"num_hidden_layers": 3}, "missing keys: encoder.layer.2"),
        ("transformer", {"num_hidden_layers": 1}, "unexpected keys: encoder.layer.1"),
    ],
)
def test_weights_that_do_not_match_the_config_are_refused(tmp_path, name, changes, match):
    model = _tiny_models()[name]
    model.save_pretrained(tmp_path / name)
    type(model).from_pretrained(tmp_path / name)  # untouched: loads
    _edit(tmp_path / name, **changes)
    with pytest.raises(ValueError, match=match) as e:
        type(model).from_pretrained(tmp_path / name)
    assert "do not match its config.json" in str(e.value) and str(tmp_path / name) in str(e.value)
    loaded = type(model).from_pretrained(tmp_path / name, strict=False)  # deliberate surgery stays possible
    assert isinstance(loaded, type(model))


def test_loading_info_is_still_available_and_a_good_checkpoint_loads_identically(tmp_path):
    for name, model in _tiny_models().items():
        model.save_pretrained(tmp_path / name)
        loaded, info = type(model).from_pretrained(tmp_path / name, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], name
        for k, v in model.state_dict().items():
            assert torch.equal(v, loaded.state_dict()[k]), (name, k)


def test_a_pipeline_folder_with_an_edited_config_and_no_manifest_is_refused(tiny_pipeline, tmp_path):
    from m6_fashion import M6FashionPipeline

    folder = tmp_path / "pipe"
    tiny_pipeline.save_pretrained(folder)
    (folder / "checksums.sha256").unlink()  # the manifest would catch this first; without it the weights check does
    _edit(folder / "transformer", num_hidden_layers=1)
    with pytest.raises(ValueError, match="unexpected keys: encoder.layer.1"):
        M6FashionPipeline.from_pretrained(folder)
    # a model_index.json naming the wrong class for the decoder: a PQTokenizer cannot load the decoder's weights
    _edit(folder / "transformer", num_hidden_layers=2)
    index = json.loads((folder / "model_index.json").read_text())
    index["decoder"] = ["m6_fashion.models.pq_tokenizer", "PQTokenizer"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="PQTokenizer weights in .* do not match"):
        M6FashionPipeline.from_pretrained(folder)
