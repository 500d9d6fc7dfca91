"""Stage 1 decoder: a StyleGAN2-style generator driven by *spatial* style maps (StyleMapGAN-like).

The quantised latent grid (B, D, h, w) is mapped by a small convolutional mapping network to a style
map (B, S, h, w). Every synthesis layer resizes the style map to its own resolution and turns it, with a
1x1 convolution, into a per-location, per-channel modulation of its input; the convolution weights are
shared, and a demodulation factor computed per location keeps activations at unit scale. This is the
non-fused form of modulated convolution (scale the input, shared-weight conv, scale the output), which
exports to ONNX with a dynamic batch. Outputs are accumulated through toRGB skips, as in StyleGAN2.

The discriminator that trains it lives in `discriminator.py`; it is never saved inside the decoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

from .loading import StrictLoadingMixin


@dataclass
class StyleDecoderOutput(BaseOutput):
    """Args: sample (`torch.FloatTensor` of shape `(B, 3, H, W)`): decoded images in [-1, 1] (not clamped)."""

    sample: torch.FloatTensor = None


class SpatialModulatedConv2d(nn.Module):
    """3x3 conv whose input is modulated location by location by a style map.

    x (B, Cin, H, W), style (B, S, H, W) -> (B, Cout, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, style_channels: int, kernel_size: int = 3, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) / math.sqrt(in_channels * kernel_size**2))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.affine = nn.Conv2d(style_channels, in_channels, 1)
        nn.init.zeros_(self.affine.weight)
        nn.init.ones_(self.affine.bias)  # start as an unmodulated conv
        self.demodulate = demodulate
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        s = self.affine(style)  # (B, Cin, H, W)
        out = F.conv2d(x * s, self.weight, padding=self.padding)
        if self.demodulate:
            # per-location demodulation: 1 / sqrt(sum_i s_i^2 * sum_k w_oik^2), as a 1x1 conv of s^2
            w2 = self.weight.pow(2).sum(dim=(2, 3))[:, :, None, None]  # (Cout, Cin, 1, 1)
            out = out * torch.rsqrt(F.conv2d(s.pow(2), w2) + 1e-8)
        return out + self.bias[None, :, None, None]


class StyledLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, style_channels: int):
        super().__init__()
        self.conv = SpatialModulatedConv2d(in_channels, out_channels, style_channels)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x, style), 0.2) * math.sqrt(2)


class ToRGB(nn.Module):
    def __init__(self, in_channels: int, style_channels: int):
        super().__init__()
        self.conv = SpatialModulatedConv2d(in_channels, 3, style_channels, kernel_size=1, demodulate=False)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.conv(x, style)


class StyleDecoder(StrictLoadingMixin, ModelMixin, ConfigMixin):
    r"""Spatial-style StyleGAN2-like generator: latents (B, D, h, w) -> images (B, 3, h * 2^(levels-1), ...).

    Parameters:
        latent_channels (`int`, defaults to 64): D, channels of the quantised latent grid.
        style_channels (`int`, defaults to 128): S, channels of the spatial style map.
        mapping_layers (`int`, defaults to 2): 3x3 conv layers of the mapping network latents -> style map.
        block_out_channels (`Tuple[int]`, defaults to `(256, 128, 64)`): synthesis widths per resolution,
            from the grid resolution upwards; every level after the first doubles the resolution.
        layers_per_block (`int`, defaults to 2): styled conv layers per resolution.
        sample_size (`int`, defaults to 64): output side in pixels (informational; must equal
            grid side * 2^(levels-1)). The decoder is convolutional: a non-square `(B, D, h, w)` latent
            grid (e.g. 16 x 12) decodes to `(B, 3, h * 2^(levels-1), w * 2^(levels-1))` (e.g. 256 x 192).
    """

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 64,
        style_channels: int = 128,
        mapping_layers: int = 2,
        block_out_channels: Tuple[int, ...] = (256, 128, 64),
        layers_per_block: int = 2,
        sample_size: int = 64,
    ):
        super().__init__()
        mapping = [nn.Conv2d(latent_channels, style_channels, 3, padding=1)]
        for _ in range(mapping_layers - 1):
            mapping += [nn.LeakyReLU(0.2), nn.Conv2d(style_channels, style_channels, 3, padding=1)]
        self.mapping = nn.Sequential(*mapping)
        self.conv_in = nn.Conv2d(latent_channels, block_out_channels[0], 3, padding=1)
        self.levels = nn.ModuleList()
        self.to_rgb = nn.ModuleList()
        ch = block_out_channels[0]
        for out_ch in block_out_channels:
            layers = nn.ModuleList()
            for _ in range(layers_per_block):
                layers.append(StyledLayer(ch, out_ch, style_channels))
                ch = out_ch
            self.levels.append(layers)
            self.to_rgb.append(ToRGB(ch, style_channels))

    @property
    def upsample_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def forward(self, latents: torch.Tensor, return_dict: bool = True):
        """latents (B, D, h, w) (from `PQTokenizer.lookup`) -> `StyleDecoderOutput(sample=(B, 3, H, W))`."""
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or latents.shape[1] != self.config.latent_channels:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must have shape (B, {self.config.latent_channels}, h, w); got {shape}")
        latents = latents.to(self.dtype)
        style = self.mapping(latents)
        x = self.conv_in(latents)
        rgb = None
        for i, (layers, to_rgb) in enumerate(zip(self.levels, self.to_rgb)):
            if i > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
                rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False)
            s = style if i == 0 else F.interpolate(style, size=x.shape[-2:], mode="bilinear", align_corners=False)
            for layer in layers:
                x = layer(x, s)
            y = to_rgb(x, s)
            rgb = y if rgb is None else rgb + y
        if not return_dict:
            return (rgb,)
        return StyleDecoderOutput(sample=rgb)
