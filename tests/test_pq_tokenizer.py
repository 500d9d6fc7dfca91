"""Stage 1: PQTokenizer and StyleDecoder on real product photos."""

import pytest
import torch

from m6_fashion import PQTokenizer, StyleDecoder
from m6_fashion.image_processing import preprocess


def _tiny(**kw):
    torch.manual_seed(0)
    args = dict(block_out_channels=(8, 16, 16), latent_channels=16)
    args.update(kw)
    return PQTokenizer(**args)


@pytest.fixture(scope="module")
def pixels(real_images):
    return preprocess([r["image"] for r in real_images[:8]], 64)


def test_shapes_and_token_range(pixels):
    tok = _tiny()
    tok.train()
    tok(pixels)  # initialises the codebooks from encoder outputs
    tok.eval()
    tokens = tok.encode(pixels)
    assert tokens.shape == (8, 16, 16, 4) and tokens.dtype == torch.long
    assert int(tokens.min()) >= 0 and int(tokens.max()) < 256
    latents = tok.lookup(tokens)
    assert latents.shape == (8, 16, 16, 16)
    dec = StyleDecoder(latent_channels=16, style_channels=8, block_out_channels=(16, 8, 8))
    assert dec(latents).sample.shape == (8, 3, 64, 64)


def test_lookup_of_encode_equals_quantised_latents(pixels):
    tok = _tiny().eval()
    out = tok(pixels)
    assert torch.allclose(tok.lookup(out.tokens), out.latents, atol=1e-5)


@pytest.mark.parametrize("qtype", ["product", "vector", "residual"])
def test_equal_codebook_storage_and_token_groups(qtype, pixels):
    tok = _tiny(quantizer_type=qtype)
    assert tok.codebook_numel() == 256 * 16  # K * D for all three
    tok.eval()
    tokens = tok.encode(pixels[:2])
    assert tokens.shape[-1] == (1 if qtype == "vector" else 4)
    assert torch.allclose(tok.lookup(tokens), tok(pixels[:2]).latents, atol=1e-5)


def test_residual_quantisation_reduces_error(pixels):
    """Each residual stage quantises what the previous ones left: more stages, smaller error."""
    torch.manual_seed(0)
    errs = []
    for m in (1, 2, 4):
        tok = _tiny(quantizer_type="residual", num_groups=m)
        tok.train()
        for _ in range(3):
            tok(pixels)
        tok.eval()
        z = tok.encode_latents(pixels)
        errs.append(float((tok.lookup(tok.encode(pixels)) - z.detach()).pow(2).mean()))
    assert errs[2] < errs[0]


def test_gradients_reach_encoder_through_quantiser(pixels):
    tok = _tiny()
    dec = StyleDecoder(latent_channels=16, style_channels=8, block_out_channels=(16, 8, 8))
    tok.train()
    out = tok(pixels[:4])
    loss = (dec(out.latents).sample - pixels[:4]).abs().mean() + out.commitment_loss
    loss.backward()
    g = tok.encoder.conv_in.weight.grad
    assert g is not None and g.abs().sum() > 0


def test_dead_codes_are_restarted(pixels):
    tok = _tiny(dead_code_threshold=0.5)
    tok.train()
    for _ in range(5):
        tok(pixels)
    # with restarts, codes no batch used are replaced by encoder outputs, so codes stay spread out
    embed = tok.codebooks.embed
    assert torch.isfinite(embed).all()
    assert tok.codebooks.cluster_size.min() >= 0


def test_save_load_round_trip_identical(tmp_path, pixels):
    tok = _tiny()
    tok.train(); tok(pixels); tok.eval()
    dec = StyleDecoder(latent_channels=16, style_channels=8, block_out_channels=(16, 8, 8)).eval()
    tok.save_pretrained(tmp_path / "tok"); dec.save_pretrained(tmp_path / "dec")
    assert (tmp_path / "tok" / "diffusion_pytorch_model.safetensors").is_file()
    tok2 = PQTokenizer.from_pretrained(tmp_path / "tok").eval()
    dec2 = StyleDecoder.from_pretrained(tmp_path / "dec").eval()
    t1, t2 = tok.encode(pixels), tok2.encode(pixels)
    assert torch.equal(t1, t2)
    with torch.no_grad():
        assert torch.equal(dec(tok.lookup(t1)).sample, dec2(tok2.lookup(t2)).sample)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(1, 1, 64, 64), "channels"),
        (torch.zeros(1, 3, 62, 62), "divisible"),
        (torch.zeros(3, 64, 64), "4-D"),
    ],
)
def test_bad_pixels(bad, match):
    with pytest.raises(ValueError, match=match):
        _tiny().encode(bad)


def test_bad_tokens():
    tok = _tiny()
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        tok.lookup(torch.full((1, 16, 16, 4), 256))
    with pytest.raises(ValueError, match="shape"):
        tok.lookup(torch.zeros(1, 16, 16, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        tok.lookup(torch.zeros(1, 16, 16, 4))


def test_bad_config():
    with pytest.raises(ValueError, match="quantizer_type"):
        PQTokenizer(quantizer_type="lattice")
    with pytest.raises(ValueError, match="divisible"):
        PQTokenizer(sample_size=66)
    dec = StyleDecoder(latent_channels=16, style_channels=8, block_out_channels=(16, 8, 8))
    with pytest.raises(ValueError, match="latents"):
        dec(torch.zeros(1, 8, 16, 16))


def test_half_precision_decoder_is_finite(pixels):
    """VQ decoders have produced NaNs in fp16; the decoder must stay finite in half/bfloat16."""
    tok = _tiny().eval()
    dec = StyleDecoder(latent_channels=16, style_channels=8, block_out_channels=(16, 8, 8)).eval()
    latents = tok.lookup(tok.encode(pixels[:2]))
    with torch.no_grad():
        out = dec.to(torch.bfloat16)(latents.to(torch.bfloat16)).sample
    assert torch.isfinite(out.float()).all()
