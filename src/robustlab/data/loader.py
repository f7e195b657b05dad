"""Batches from a dataset kept whole on the device, augmented there a batch at a time.

The images live on the device once (uint8 NCHW, or float32 NCHW for PCA-projected data);
a batch is a gather, a conversion to float in [0, 1] and a few vectorised random
transforms, with no per-image Python and no host synchronisation. All randomness comes
from one ``torch.Generator`` seeded by (seed, epoch), so an epoch can be replayed
exactly when a run resumes, on the CPU and on CUDA alike.

Augmentation (``AugmentConfig``), in this order:
- random crop: shift by up to ``crop_padding`` pixels, reading reflect-padded borders;
- horizontal flip with probability 1/2;
- cutout: one ``cutout`` x ``cutout`` square, placed wholly inside the image (so it always
  erases the same area, 1/16 of a CIFAR image for 8x8), filled with the training mean so
  that the centred value is 0;
- Gaussian noise of std ``noise_std``, not clamped (randomized-smoothing base nets).
Draws are per sample, or one per batch with ``per_batch`` (the reference code's way).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from robustlab.config import AugmentConfig

MEAN_CHUNK = 8192  # images per step when computing channel means on the device


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator whose stream is a function of (seed, epoch) alone."""
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be non-negative, got seed={seed}, epoch={epoch}")
    high, low = np.random.SeedSequence([seed, epoch]).generate_state(2)
    generator = torch.Generator(device=device)
    generator.manual_seed((int(high) << 31) ^ int(low))  # mixes both words, stays below 2**63
    return generator


def augment_batch(
    x: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator | None = None,
    fill: torch.Tensor | None = None,
) -> torch.Tensor:
    """Random crop, flip, cutout and noise of a float batch (N, C, H, W), as ``cfg`` says.

    ``fill`` (C,) is the cutout colour, normally the training mean; zeros by default.
    """
    draws = 1 if cfg.per_batch else len(x)
    if cfg.crop_padding or cfg.flip:
        x = random_crop_flip(x, cfg.crop_padding, cfg.flip, draws, generator)
    if cfg.cutout:
        x = random_cutout(x, cfg.cutout, fill, draws, generator)
    if cfg.noise_std:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + cfg.noise_std * noise
    return x


def random_crop_flip(
    x: torch.Tensor, padding: int, flip: bool, draws: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Shifted windows of the reflect-padded images, mirrored with probability 1/2.

    One gather per axis: output row i of sample n reads row reflect(i + dy_n), so the
    padded image is never built.
    """
    n, c, height, width = x.shape
    if padding >= min(height, width):
        raise ValueError(
            f"crop padding {padding} must be smaller than the image size {height}x{width} (reflect padding)"
        )
    shifts = torch.randint(-padding, padding + 1, (2, draws), generator=generator, device=x.device)
    rows = _reflect(shifts[0, :, None] + torch.arange(height, device=x.device), height)
    cols = _reflect(shifts[1, :, None] + torch.arange(width, device=x.device), width)
    if flip:
        mirrored = torch.rand(draws, generator=generator, device=x.device) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    x = x.gather(2, rows[:, None, :, None].expand(n, c, height, width))
    return x.gather(3, cols[:, None, None, :].expand(n, c, height, width))


def random_cutout(
    x: torch.Tensor, size: int, fill: torch.Tensor | None, draws: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Set one ``size`` x ``size`` square per sample (or per batch) to ``fill``."""
    _, c, height, width = x.shape
    if size > min(height, width):
        raise ValueError(f"cutout size {size} is larger than the image size {height}x{width}")
    top = torch.randint(0, height - size + 1, (draws, 1), generator=generator, device=x.device)
    left = torch.randint(0, width - size + 1, (draws, 1), generator=generator, device=x.device)
    ys, xs = torch.arange(height, device=x.device), torch.arange(width, device=x.device)
    inside_rows = (ys >= top) & (ys < top + size)
    inside_cols = (xs >= left) & (xs < left + size)
    square = inside_rows[:, None, :, None] & inside_cols[:, None, None, :]
    fill = torch.zeros(c, device=x.device) if fill is None else fill
    return torch.where(square, fill.to(x.device, x.dtype).view(1, c, 1, 1), x)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror indices that fall off either edge, as reflect padding does (edge not repeated)."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


class DeviceLoader:
    """Iterates ``(x float32 NCHW in [0, 1] (+ noise), y int64)`` batches on ``device``.

    ``images`` are NHWC, uint8 (the fast default) or float32 in the [0, 1] scale (PCA
    projections), as a numpy array or tensor. Each pass over the loader uses the current
    epoch and then advances it; ``set_epoch(e)`` sets it, so order and augmentation of
    epoch ``e`` are the same whenever it is replayed. Without ``augment`` and ``shuffle``
    it is an evaluation loader.
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        batch_size: int,
        *,
        augment: AugmentConfig | None = None,
        mean: np.ndarray | torch.Tensor | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        fill_last: bool = False,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = _device_images(images, self.device)
        self.labels = torch.as_tensor(labels).to(self.device, torch.int64)
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"expected {len(self.images)} labels, got shape {tuple(self.labels.shape)}")
        if drop_last and fill_last:
            raise ValueError("drop_last and fill_last exclude each other: drop the ragged batch or fill it")
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.fill_last = drop_last, fill_last
        self.augment = augment
        if augment is not None:
            _check_augment(augment, self.images.shape[2:])
        self.mean = _channel_means(self.images) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        self.mean = self.mean.to(self.device)
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = epoch_generator(self.seed, self.epoch, self.device)
        self.epoch += 1
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=generator, device=self.device)
        else:
            order = torch.arange(self.num_samples, device=self.device)
        ragged = self.num_samples % self.batch_size
        if self.fill_last and ragged and self.num_samples > self.batch_size:
            order = torch.cat([order, order[: self.batch_size - ragged]])
        for batch in range(len(self)):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            x = _to_float(self.images[index])
            if self.augment is not None:
                x = augment_batch(x, self.augment, generator, self.mean)
            yield x, self.labels[index]


def _device_images(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    images = torch.as_tensor(np.ascontiguousarray(images)) if not torch.is_tensor(images) else images
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype not in (torch.uint8, torch.float32):
        raise ValueError(
            f"images must be (N, H, W, C) with C = 1 or 3, uint8 or float32 in [0, 1]; "
            f"got {images.dtype} {tuple(images.shape)}"
        )
    return images.to(device).permute(0, 3, 1, 2).contiguous()


def _to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255) if images.dtype == torch.uint8 else images  # already a copy


def _channel_means(images: torch.Tensor) -> torch.Tensor:
    total = torch.zeros(images.shape[1], dtype=torch.float64, device=images.device)
    for chunk in images.split(MEAN_CHUNK):
        total += chunk.sum(dim=(0, 2, 3), dtype=torch.float64)
    means = total / (images.numel() / images.shape[1])
    return (means / 255 if images.dtype == torch.uint8 else means).float()


def _check_augment(cfg: AugmentConfig, size: torch.Size) -> None:
    height, width = size
    side = min(height, width)
    if not 0 <= cfg.crop_padding < side:
        raise ValueError(
            f"augment.crop_padding={cfg.crop_padding} must be from 0 to {side - 1} for {height}x{width} images"
        )
    if not 0 <= cfg.cutout < side:  # a cutout as large as the image would erase all of it
        raise ValueError(
            f"augment.cutout={cfg.cutout} must be from 0 to {side - 1} for {height}x{width} images "
            "(the paper's 8 is for 32x32 CIFAR images; use about a quarter of the side, or 0 for none)"
        )
    if cfg.noise_std < 0:
        raise ValueError(f"augment.noise_std must be non-negative, got {cfg.noise_std}")
