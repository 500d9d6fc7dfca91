"""StyleGAN2-style discriminator used to train the stage-1 decoder adversarially (non-saturating loss + R1)."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, padding=1, stride=2)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = F.leaky_relu(self.conv2(h), 0.2)
        return (h + self.skip(x)) / math.sqrt(2)


class StyleGANDiscriminator(ModelMixin, ConfigMixin):
    """StyleGAN2-style residual discriminator with minibatch standard deviation: (B, 3, H, W) -> logits (B,).

    The input size is `sample_height x sample_width` (each defaults to `sample_size`, e.g. 256 x 192 for 3:4
    photos); the last linear layer is sized for it.
    """

    @register_to_config
    def __init__(self, sample_size: int = 64, block_out_channels: Tuple[int, ...] = (64, 128, 256, 256),
                 sample_height: Optional[int] = None, sample_width: Optional[int] = None):
        super().__init__()
        self.conv_in = nn.Conv2d(3, block_out_channels[0], 1)
        blocks = []
        ch = block_out_channels[0]
        for out_ch in block_out_channels[1:]:
            blocks.append(DiscriminatorBlock(ch, out_ch))
            ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        factor = 2 ** (len(block_out_channels) - 1)
        rows, cols = (sample_height or sample_size) // factor, (sample_width or sample_size) // factor
        self.conv_out = nn.Conv2d(ch + 1, ch, 3, padding=1)
        self.fc = nn.Linear(ch * rows * cols, ch)
        self.out = nn.Linear(ch, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.blocks(F.leaky_relu(self.conv_in(images), 0.2))
        group = min(4, h.shape[0])
        if h.shape[0] % group:
            group = 1
        b, c, hh, ww = h.shape
        y = h.view(group, -1, c, hh, ww)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8).mean(dim=(1, 2, 3))  # (B/group,)
        y = y.repeat(group).view(b, 1, 1, 1).expand(b, 1, hh, ww)
        h = F.leaky_relu(self.conv_out(torch.cat([h, y], 1)), 0.2)
        return self.out(F.leaky_relu(self.fc(h.flatten(1)), 0.2)).squeeze(1)
