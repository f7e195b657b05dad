"""Parameter-free 1-Lipschitz building blocks: channel selection and padding, pixel
unshuffle, global max pooling, input centring.

Keeping the first channels or appending zero channels is a projection or an isometry;
PixelUnshuffle is a permutation; a per-channel max over space changes by at most the
largest per-pixel change; subtracting a constant does not change differences.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The torch built-ins are already exactly what the networks need.
Flatten = nn.Flatten
PixelUnshuffle = nn.PixelUnshuffle


class FirstChannels(nn.Module):
    """Keeps the first ``channels`` channels (dim 1)."""

    def __init__(self, channels: int):
        super().__init__()
        if channels < 1:
            raise ValueError(f"FirstChannels: channels must be >= 1, got {channels}")
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] < self.channels:
            raise ValueError(f"FirstChannels({self.channels}) got only {x.shape[1]} channels (shape {tuple(x.shape)})")
        return x[:, : self.channels]

    def extra_repr(self) -> str:
        return str(self.channels)


class ZeroChannelConcatenation(nn.Module):
    """Appends zero channels (dim 1) up to ``width`` channels."""

    def __init__(self, width: int):
        super().__init__()
        if width < 1:
            raise ValueError(f"ZeroChannelConcatenation: width must be >= 1, got {width}")
        self.width = width

    def forward(self, x: Tensor) -> Tensor:
        missing = self.width - x.shape[1]
        if missing < 0:
            raise ValueError(f"ZeroChannelConcatenation({self.width}) got {x.shape[1]} channels, more than the width")
        zeros = x.new_zeros(x.shape[0], missing, *x.shape[2:])
        return torch.cat((x, zeros), dim=1)

    def extra_repr(self) -> str:
        return f"width={self.width}"


class GlobalMaxPool(nn.Module):
    """Max over all spatial positions, per channel: (B, C, H, W) -> (B, C, 1, 1)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.amax(dim=(-2, -1), keepdim=True)


class ZeroPad(nn.Module):
    """Zero-pads (B, C, H, W) images to (height, width), split as evenly as possible."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: Tensor) -> Tensor:
        dh, dw = self.height - x.shape[-2], self.width - x.shape[-1]
        if dh < 0 or dw < 0:
            raise ValueError(f"ZeroPad({self.height}, {self.width}) got larger images {tuple(x.shape[-2:])}")
        return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))

    def extra_repr(self) -> str:
        return f"height={self.height}, width={self.width}"


class CenterInputs(nn.Module):
    """Subtracts the per-channel training-set mean (buffer ``mean`` of shape (C, 1, 1)).

    Inputs are only centred, never divided by a std, so radii stay in pixel scale.
    """

    def __init__(self, mean: Sequence[float] | Tensor):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        if mean.numel() == 0:
            raise ValueError("CenterInputs: mean needs one value per input channel")
        self.mean: Tensor
        self.register_buffer("mean", mean.view(-1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"the model expects images of shape (batch, {self.mean.shape[0]}, H, W), got {tuple(x.shape)}"
            )
        return x - self.mean.to(x.dtype)

    def extra_repr(self) -> str:
        return "mean=" + ", ".join(f"{v:.4f}" for v in self.mean.flatten().tolist())
