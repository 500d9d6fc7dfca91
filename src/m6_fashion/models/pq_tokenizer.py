"""Stage 1 image tokenizer: a CNN encoder followed by product quantisation (M6-Fashion section 3.1).

The encoder maps an image to a latent grid (B, D, h, w). Product quantisation splits the D channels
into M groups of D/M channels and quantises each group with its own codebook of K codes, so every
grid position becomes M discrete tokens (default 4 x 256). For the paper's Table 4 ablation the same
class also offers plain vector quantisation (one codebook of K codes of D channels) and residual
quantisation (M stages sharing one codebook of K codes of D channels, as in RQ-VAE); all three hold
exactly K * D codebook numbers.

Codebooks are learned with EMA updates (no codebook gradient), initialised from encoder outputs of the
first training batch, and dead codes are restarted from recent encoder outputs so usage stays high.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

from .loading import StrictLoadingMixin

QUANTIZER_TYPES = ("product", "vector", "residual")


@dataclass
class PQTokenizerOutput(BaseOutput):
    """Output of `PQTokenizer.forward`.

    Args:
        latents (`torch.FloatTensor` of shape `(B, D, h, w)`): quantised latents (straight-through gradient).
        tokens (`torch.LongTensor` of shape `(B, h, w, M)`): code indices in `[0, K)`.
        commitment_loss (`torch.FloatTensor`, scalar): `||z_e - sg(z_q)||^2`, weighted by `commitment_cost`.
        perplexity (`torch.FloatTensor` of shape `(M,)`): per-group code perplexity of this batch.
    """

    latents: torch.FloatTensor = None
    tokens: torch.LongTensor = None
    commitment_loss: torch.FloatTensor = None
    perplexity: torch.FloatTensor = None


class ResnetBlock(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv, twice, with a (1x1 when channels change) shortcut.

    `norm_groups` is GroupNorm's channel groups (capped at the channels), not the quantiser's PQ groups M
    (`PQTokenizer`'s `num_groups`).
    """

    def __init__(self, in_channels: int, out_channels: int, norm_groups: int = 32):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(norm_groups, in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(min(norm_groups, out_channels), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.shortcut(x) + h


class Encoder(nn.Module):
    """(B, C, H, W) -> (B, D, H / 2^(levels-1), W / 2^(levels-1)): residual blocks with stride-2 downsampling."""

    def __init__(self, in_channels: int, block_out_channels: Tuple[int, ...], layers_per_block: int, latent_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        blocks = []
        ch = block_out_channels[0]
        for i, out_ch in enumerate(block_out_channels):
            for _ in range(layers_per_block):
                blocks.append(ResnetBlock(ch, out_ch))
                ch = out_ch
            if i < len(block_out_channels) - 1:
                blocks.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.blocks = nn.Sequential(*blocks)
        self.mid = ResnetBlock(ch, ch)
        self.norm_out = nn.GroupNorm(min(32, ch), ch)
        self.conv_out = nn.Conv2d(ch, latent_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.blocks(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class EMACodebooks(nn.Module):
    """G independent codebooks of K codes of dimension d, learned with EMA k-means updates.

    `quantize(x)` takes `x` of shape `(N, G, d)` and returns indices `(N, G)` and the chosen codes `(N, G, d)`.
    Distances are squared Euclidean. Under torch.distributed the EMA statistics are all-reduced so every
    process keeps the same codebook.
    """

    def __init__(self, num_codebooks: int, codebook_size: int, dim: int, decay: float, eps: float = 1e-5):
        super().__init__()
        self.decay = decay
        self.eps = eps
        embed = torch.randn(num_codebooks, codebook_size, dim) * 0.02
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())
        self.register_buffer("cluster_size", torch.ones(num_codebooks, codebook_size))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @property
    def num_codebooks(self) -> int:
        return self.embed.shape[0]

    @property
    def codebook_size(self) -> int:
        return self.embed.shape[1]

    def indices(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, G, d) -> nearest code indices (N, G)."""
        e = self.embed.to(x.dtype)  # (G, K, d)
        xt = x.transpose(0, 1)  # (G, N, d)
        dist2 = xt.pow(2).sum(-1, keepdim=True) - 2 * torch.bmm(xt, e.transpose(1, 2)) + e.pow(2).sum(-1)[:, None, :]
        return dist2.argmin(-1).transpose(0, 1)  # (N, G)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (..., G) -> codes (..., G, d)."""
        g = torch.arange(self.num_codebooks, device=indices.device)
        return self.embed[g, indices]

    @staticmethod
    def _all_reduce(t: torch.Tensor) -> torch.Tensor:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(t)
        return t

    @staticmethod
    def _broadcast(t: torch.Tensor) -> torch.Tensor:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast(t, 0)
        return t

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Initialises every codebook from randomly chosen rows of x (N, G, d) (k-means++-lite)."""
        n = x.shape[0]
        idx = torch.randint(0, n, (self.codebook_size,), device=x.device)
        codes = x[idx].transpose(0, 1).float() + torch.randn_like(x[idx].transpose(0, 1).float()) * 1e-3
        codes = self._broadcast(codes.contiguous())
        self.embed.copy_(codes)
        self.embed_avg.copy_(codes)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def ema_update(self, x: torch.Tensor, indices: torch.Tensor, dead_code_threshold: float) -> None:
        """EMA k-means step on a batch x (N, G, d) with its assignments (N, G); restarts dead codes."""
        x = x.float()
        onehot = F.one_hot(indices, self.codebook_size).float()  # (N, G, K)
        counts = self._all_reduce(onehot.sum(0))  # (G, K)
        sums = self._all_reduce(torch.einsum("ngk,ngd->gkd", onehot, x).contiguous())
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum(-1, keepdim=True)
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.embed.copy_(self.embed_avg / smoothed.unsqueeze(-1))
        if dead_code_threshold > 0:
            dead = self.cluster_size < dead_code_threshold  # (G, K)
            if dead.any():
                n = x.shape[0]
                repl = x[torch.randint(0, n, (self.codebook_size,), device=x.device)].transpose(0, 1)  # (G, K, d)
                repl = self._broadcast(repl.contiguous())
                dead = self._broadcast(dead.to(torch.uint8)).bool()
                self.embed.copy_(torch.where(dead.unsqueeze(-1), repl, self.embed))
                self.embed_avg.copy_(torch.where(dead.unsqueeze(-1), repl, self.embed_avg))
                self.cluster_size.copy_(torch.where(dead, torch.ones_like(self.cluster_size), self.cluster_size))


class PQTokenizer(StrictLoadingMixin, ModelMixin, ConfigMixin):
    r"""CNN encoder + product quantiser: images (B, 3, H, W) in [-1, 1] -> tokens (B, h, w, M) in [0, K).

    Parameters:
        in_channels (`int`, defaults to 3): image channels.
        sample_size (`int`, defaults to 64): longest side of the training images in pixels (64, 128 or 256
            are the tested sizes); `grid_size = sample_size / f`. The encoder is fully convolutional: `encode`
            accepts any `H x W` that are multiples of the downsampling factor and returns a
            `(B, H / f, W / f, M)` grid, e.g. 256 x 192 px -> 16 x 12 tokens with `f = 16`; `lookup` + the
            decoder map it back to `(B, 3, H, W)`.
        sample_height (`int`, *optional*), sample_width (`int`, *optional*): the training image size when it
            is not the `sample_size` square (e.g. 256 x 192 for 3:4 catalogue photos; pipelines then read and
            paint `sample_height x sample_width` canvases on a `grid_shape` token grid). Each defaults to
            `sample_size`; when either is given, `sample_size` is set to the larger side.
        block_out_channels (`Tuple[int]`, defaults to `(64, 128, 256)`): encoder widths; every level but the
            last halves the resolution, so the downsampling factor is `2 ** (len(block_out_channels) - 1)`.
        layers_per_block (`int`, defaults to 1): residual blocks per encoder level.
        latent_channels (`int`, defaults to 64): D, channels of the latent grid.
        quantizer_type (`str`, defaults to `"product"`): `"product"` (M codebooks of K codes over D/M
            channels each), `"vector"` (one codebook of K codes over D channels, M is ignored and tokens have
            one group) or `"residual"` (M stages sharing one codebook of K codes over D channels).
        num_groups (`int`, defaults to 4): M.
        codebook_size (`int`, defaults to 256): K.
        commitment_cost (`float`, defaults to 0.25): weight of the commitment loss.
        ema_decay (`float`, defaults to 0.99): EMA decay of the codebook statistics.
        dead_code_threshold (`float`, defaults to 0.03): a code whose EMA usage count falls under this is
            restarted from a random encoder output of the current batch.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        sample_size: int = 64,
        block_out_channels: Tuple[int, ...] = (64, 128, 256),
        layers_per_block: int = 1,
        latent_channels: int = 64,
        quantizer_type: str = "product",
        num_groups: int = 4,
        codebook_size: int = 256,
        commitment_cost: float = 0.25,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 0.03,
        sample_height: Optional[int] = None,
        sample_width: Optional[int] = None,
    ):
        super().__init__()
        for name, value in (("sample_height", sample_height), ("sample_width", sample_width)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer number of pixels, or None for sample_size; got {value!r}")
        if sample_height is not None or sample_width is not None:
            sample_height = sample_size if sample_height is None else sample_height
            sample_width = sample_size if sample_width is None else sample_width
            sample_size = max(sample_height, sample_width)
            self.register_to_config(sample_size=sample_size, sample_height=sample_height, sample_width=sample_width)
        if quantizer_type not in QUANTIZER_TYPES:
            raise ValueError(f"unknown quantizer_type {quantizer_type!r}; accepted: {', '.join(QUANTIZER_TYPES)}")
        if quantizer_type == "product" and latent_channels % num_groups != 0:
            raise ValueError(f"latent_channels ({latent_channels}) must be divisible by num_groups ({num_groups}) for product quantisation")
        factor = 2 ** (len(block_out_channels) - 1)
        for name, value in (("sample_size", sample_size), ("sample_height", sample_height), ("sample_width", sample_width)):
            if value is not None and value % factor != 0:
                raise ValueError(f"{name} {value} is not divisible by the downsampling factor {factor}")
        self.encoder = Encoder(in_channels, tuple(block_out_channels), layers_per_block, latent_channels)
        if quantizer_type == "product":
            self.codebooks = EMACodebooks(num_groups, codebook_size, latent_channels // num_groups, ema_decay)
        else:
            self.codebooks = EMACodebooks(1, codebook_size, latent_channels, ema_decay)

    # ----------------------------------------------------------------- properties
    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def grid_size(self) -> int:
        """The longest side of the token grid of a training image: `sample_size / f` (an `H x W` image gives `H/f x W/f`)."""
        return self.config.sample_size // self.downsample_factor

    @property
    def sample_shape(self) -> Tuple[int, int]:
        """`(height, width)` of the training images in pixels: `(sample_height, sample_width)`, each defaulting
        to `sample_size` (configs saved before these keys existed describe the same square)."""
        cfg, s = self.config, self.config.sample_size
        h, w = getattr(cfg, "sample_height", None), getattr(cfg, "sample_width", None)
        return (s if h is None else int(h), s if w is None else int(w))

    @property
    def grid_shape(self) -> Tuple[int, int]:
        """`(rows, cols)` of the token grid of a training image: `sample_shape / f` (`(grid_size, grid_size)` when square)."""
        h, w = self.sample_shape
        return h // self.downsample_factor, w // self.downsample_factor

    @property
    def num_token_groups(self) -> int:
        """Tokens per grid position: M for product/residual quantisation, 1 for vector quantisation."""
        return 1 if self.config.quantizer_type == "vector" else self.config.num_groups

    def codebook_numel(self) -> int:
        """Numbers stored in the codebooks (equal for the three quantiser types: K * D)."""
        return self.codebooks.embed.numel()

    # ----------------------------------------------------------------- validation
    def _check_pixels(self, pixel_values: torch.Tensor) -> None:
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise ValueError(f"pixel_values must be a 4-D tensor (B, {self.config.in_channels}, H, W); got {shape}")
        b, c, h, w = pixel_values.shape
        if c != self.config.in_channels:
            raise ValueError(f"pixel_values has {c} channels; this tokenizer accepts {self.config.in_channels} (RGB images in [-1, 1])")
        f = self.downsample_factor
        if h % f or w % f:
            raise ValueError(f"image size {h}x{w} is not divisible by the downsampling factor {f}; accepted: multiples of {f} (trained at {self.config.sample_size})")

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        m, k = self.num_token_groups, self.config.codebook_size
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 4 or tokens.shape[-1] != m:
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must have shape (B, h, w, {m}); got {shape}")
        if tokens.dtype.is_floating_point:
            raise ValueError(f"tokens must be an integer tensor; got {tokens.dtype}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= k):
            raise ValueError(f"token values must lie in [0, {k}); got min {int(tokens.min())}, max {int(tokens.max())}")

    # ----------------------------------------------------------------- quantisation
    def _split(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> (B*h*w, G, d)."""
        b, d, h, w = z.shape
        g = self.codebooks.num_codebooks
        return z.permute(0, 2, 3, 1).reshape(b * h * w, g, d // g)

    def _merge(self, x: torch.Tensor, shape) -> torch.Tensor:
        b, d, h, w = shape
        return x.reshape(b, h, w, d).permute(0, 3, 1, 2)

    def _quantize(self, z: torch.Tensor, update: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """z (B, D, h, w) -> (z_q (B, D, h, w) without straight-through, tokens (B, h, w, M'))."""
        b, d, h, w = z.shape
        qtype = self.config.quantizer_type
        if qtype in ("product", "vector"):
            x = self._split(z)
            if update and not bool(self.codebooks.initialized):
                self.codebooks.init_from_data(x.detach())
            idx = self.codebooks.indices(x)
            if update:
                self.codebooks.ema_update(x.detach(), idx, self.config.dead_code_threshold)
            zq = self._merge(self.codebooks.lookup(idx), z.shape)
            return zq, idx.reshape(b, h, w, -1)
        # residual: M stages over one shared codebook
        residual = self._split(z)  # (N, 1, D)
        if update and not bool(self.codebooks.initialized):
            self.codebooks.init_from_data(residual.detach())
        total = torch.zeros_like(residual)
        all_idx = []
        for _ in range(self.config.num_groups):
            idx = self.codebooks.indices(residual)
            if update:
                self.codebooks.ema_update(residual.detach(), idx, self.config.dead_code_threshold)
            q = self.codebooks.lookup(idx)
            total = total + q
            residual = residual - q
            all_idx.append(idx)
        return self._merge(total, z.shape), torch.cat(all_idx, dim=-1).reshape(b, h, w, -1)

    # ----------------------------------------------------------------- public API
    def encode_latents(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, 3, H, W) -> continuous latents (B, D, h, w) before quantisation."""
        self._check_pixels(pixel_values)
        return self.encoder(pixel_values)

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """pixel_values (B, 3, H, W) in [-1, 1] -> tokens `LongTensor` (B, h, w, M) with values in [0, K)."""
        z = self.encode_latents(pixel_values.to(self.dtype))
        _, tokens = self._quantize(z.float(), update=False)
        return tokens

    def lookup(self, tokens: torch.Tensor) -> torch.FloatTensor:
        """tokens (B, h, w, M) in [0, K) -> quantised latents (B, D, h, w)."""
        self._check_tokens(tokens)
        tokens = tokens.long()
        codes = self.codebooks.lookup(tokens)  # (B, h, w, M, d)
        if self.config.quantizer_type == "residual":
            latents = codes.sum(-2)  # (B, h, w, D)
        else:
            latents = codes.flatten(-2)
        return latents.permute(0, 3, 1, 2).contiguous()

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True):
        """Training forward: encodes, quantises (EMA codebook update when `self.training`), straight-through.

        Returns `PQTokenizerOutput` with latents (B, D, h, w), tokens (B, h, w, M), commitment loss, perplexity (M,).
        """
        z = self.encode_latents(pixel_values).float()
        with torch.autocast(device_type=z.device.type, enabled=False):  # distances in float32
            zq, tokens = self._quantize(z, update=self.training)
        commitment = self.config.commitment_cost * F.mse_loss(z, zq.detach())
        latents = z + (zq - z).detach()  # straight-through estimator
        counts = F.one_hot(tokens.flatten(0, 2), self.config.codebook_size).float().sum(0)  # (M, K)
        probs = counts / counts.sum(-1, keepdim=True).clamp_min(1)
        perplexity = torch.exp(-(probs * probs.clamp_min(1e-10).log()).sum(-1))
        if not return_dict:
            return latents, tokens, commitment, perplexity
        return PQTokenizerOutput(latents=latents, tokens=tokens, commitment_loss=commitment, perplexity=perplexity)
