"""Principal components of flattened training images, and projections onto subsets of them.

The paper's PCA experiment (Section 7) keeps only some components of every image, e.g.
``0-15`` (high variance) plus ``512-3071`` (low variance), maps the result back to image
space and trains unchanged models on it. Projected images are float32 NHWC in the [0, 1]
pixel scale, neither rounded nor clipped: rounding to uint8 would destroy exactly the
low-variance components the experiment is about. ``DeviceLoader`` takes such arrays as
they are.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustlab.progress import progress_bar

CHUNK = 4096  # images per matrix product: bounds the float64 working memory
CACHE_ENV = "ROBUSTLAB_CACHE"  # folder of cached fits (default ~/.cache/robustlab)


@dataclass
class PCA:
    mean: np.ndarray  # (D,) float64 mean image, flattened, in the [0, 1] scale
    components: np.ndarray  # (D, D) float64, column i is component i (variance descending)
    variances: np.ndarray  # (D,) float64, the variance along each component
    image_shape: tuple[int, int, int]  # (H, W, C)

    @property
    def dim(self) -> int:
        return len(self.mean)

    def explained_variance(self, components: np.ndarray | str) -> float:
        """Fraction of the total variance that the given components hold."""
        components = _as_indices(components, self.dim)
        return float(self.variances[components].sum() / self.variances.sum())

    def project(self, images: np.ndarray, components: np.ndarray | str) -> np.ndarray:
        """``images`` (NHWC) projected onto ``components`` and mapped back: float32 NHWC.

        The mean image is kept: x -> mean + V_S V_S^T (x - mean).
        """
        if images.shape[1:] != self.image_shape:
            raise ValueError(f"images of shape {images.shape[1:]} do not fit this PCA of {self.image_shape} images")
        kept = np.zeros(self.dim, bool)
        kept[_as_indices(components, self.dim)] = True
        # Keeping most components, removing the others is the cheaper product: x - V_R V_R^T x.
        complement = kept.sum() > self.dim / 2
        basis = self.components[:, ~kept if complement else kept]
        out = np.empty((len(images), self.dim), np.float32)
        for start in progress_bar(range(0, len(images), CHUNK), "PCA projection", "chunk"):
            centred = _flat(images[start : start + CHUNK]) - self.mean
            removed_or_kept = (centred @ basis) @ basis.T
            out[start : start + CHUNK] = (centred - removed_or_kept if complement else removed_or_kept) + self.mean
        return out.reshape(images.shape)


def fit_pca(images: np.ndarray) -> PCA:
    """Principal components of NHWC images (uint8, or float in [0, 1]), in float64.

    The covariance is accumulated a chunk at a time and diagonalised with ``eigh``;
    components come sorted by variance, largest first.
    """
    if images.ndim != 4 or len(images) < 2:
        raise ValueError(f"PCA needs at least two (N, H, W, C) images, got shape {images.shape}")
    dim = int(np.prod(images.shape[1:]))
    mean = np.zeros(dim)
    for start in range(0, len(images), CHUNK):
        mean += _flat(images[start : start + CHUNK]).sum(axis=0)
    mean /= len(images)
    covariance = np.zeros((dim, dim))
    for start in progress_bar(range(0, len(images), CHUNK), "PCA covariance", "chunk"):
        centred = _flat(images[start : start + CHUNK]) - mean
        covariance += centred.T @ centred
    covariance /= len(images) - 1
    variances, vectors = np.linalg.eigh(covariance)  # ascending
    variances = np.clip(variances[::-1], 0, None)  # round-off can make tiny ones negative
    return PCA(mean, np.ascontiguousarray(vectors[:, ::-1]), variances, tuple(images.shape[1:]))


_FITTED: dict[str, PCA] = {}  # this process's fits, by fingerprint of the images


def cached_pca(images: np.ndarray, cache_dir: str | Path | None = None) -> PCA:
    """``fit_pca(images)``, fitted once per set of training images and kept.

    A sweep projects every run's data and certifies every run's training images with the
    same components, so the fit (1-2 minutes for CIFAR-10 on a CPU) is done once: kept in this
    process, and in ``cache_dir`` (default ``$ROBUSTLAB_CACHE`` or ``~/.cache/robustlab``) as
    ``pca-<fingerprint>.npz`` for other processes (sweep workers). The fingerprint is a hash of
    the images' bytes and shape; the file holds arrays only (read with ``allow_pickle=False``).
    """
    key = hashlib.sha256(np.ascontiguousarray(images).data).hexdigest()[:24] + f"-{'x'.join(map(str, images.shape))}"
    if key in _FITTED:
        return _FITTED[key]
    path = Path(cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "robustlab") / f"pca-{key}.npz"
    pca = _read_cached(path)
    if pca is None:
        pca = fit_pca(images)
        _write_cached(path, pca)
    _FITTED.clear()  # one training split at a time: a CIFAR-10 fit is 75 MB
    _FITTED[key] = pca
    return pca


def _read_cached(path: Path) -> PCA | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            height, width, channels = (int(v) for v in data["image_shape"])
            return PCA(data["mean"], data["components"], data["variances"], (height, width, channels))
    except (OSError, KeyError, ValueError):  # absent, or a torn or foreign file: fit again
        return None


def _write_cached(path: Path, pca: PCA) -> None:
    from robustlab.files import atomic_open

    try:
        with atomic_open(path, "wb") as handle:
            np.savez(
                handle,
                mean=pca.mean,
                components=pca.components,
                variances=pca.variances,
                image_shape=np.array(pca.image_shape),
            )
    except OSError:  # a read-only home: the fit still works, only uncached across processes
        pass


def parse_component_spec(spec: str, dim: int) -> np.ndarray:
    """``"0-15,512-3071"`` -> sorted unique 0-based component indices (ranges are inclusive)."""
    indices = []
    for part in spec.replace(" ", "").split(","):
        start, sep, end = part.partition("-")
        try:
            first, last = int(start), int(end) if sep else int(start)
        except ValueError:
            raise ValueError(
                f"bad component spec '{spec}': write 0-based inclusive ranges like '0-15,512-3071'"
            ) from None
        if not 0 <= first <= last < dim:
            raise ValueError(
                f"component range '{part}' is outside 0-{dim - 1} (or reversed); there are {dim} components"
            )
        indices.append(np.arange(first, last + 1))
    return np.unique(np.concatenate(indices))


def _as_indices(components: np.ndarray | str, dim: int) -> np.ndarray:
    if isinstance(components, str):
        return parse_component_spec(components, dim)
    components = np.asarray(components, dtype=np.int64)
    if components.ndim != 1 or len(components) == 0 or components.min() < 0 or components.max() >= dim:
        raise ValueError(f"component indices must be a non-empty list within 0-{dim - 1}")
    return components


def _flat(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float64)
    return flat / 255 if images.dtype == np.uint8 else flat
