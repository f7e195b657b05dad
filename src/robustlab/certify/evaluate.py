"""Certified evaluation of a trained model: accuracy, CRA at several radii, the CRA curve.

Floating-point error. A certificate compares a computed margin with ``sqrt(2) * L * eps``;
the computed logits differ from the exact ones by rounding error, which for float32 on a
GPU (TF32 convolutions, reduced-precision reductions) can reach 1e-3 of the activations:
enough to claim a radius that exact arithmetic does not give. Certification therefore
runs on a float64 copy of the model, whose rounding error is below ``depth * fan_in *
2**-53`` times the activation scale (below 1e-9 relative even for 100 layers of fan-in
65536), and every margin is lowered by ``float_error_slack``, which exceeds that bound by
a factor above 1000 while costing at most ~4e-5 of radius on CIFAR-sized inputs. Standard networks
(``lipschitz_constant is None``) certify nothing and are evaluated in float32.

The model is never the compiled or autocast training model: ``certify_points`` works on
a float64 deep copy in eval mode, so training shortcuts cannot leak into certificates.

Screening (CPU). float64 convolutions have no fast CPU kernel (5.6x slower than float32 on
CPL LipConvNet), and a misclassified point gets radius 0 in any precision. So on the CPU a
float32 copy first sorts out the points it misclassifies by more than ``SCREEN_MARGIN``
times the activation scale, and only the others are certified in float64 (``Screen``). That
margin is 2,500x the largest float32-float64 logit gap measured (4e-8 of the scale, CPL
LipConvNet on CIFAR-10). A point sorted out by mistake could only lose its radius, never gain
one: 0 is always sound. A sorted-out point's prediction is the float32 copy's.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robustlab.certify.certificates import cra_points, dense_curve
from robustlab.certify.margins import certified_radii, cra, margins
from robustlab.config import DEFAULT_EPS, ExperimentConfig
from robustlab.data.splits import prepare_data
from robustlab.progress import progress_bar
from robustlab.records import ClassResult, EvalResult

SLACK_RELATIVE = 1e-6  # float64 margins are lowered by this times the activation scale
SCREEN_MARGIN = 1e-4  # float32 margins below -this times the activation scale: misclassified
# A batch's (predictions, radii or None) from its images and labels
Certify = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class Certificates:
    """Per-point outcome of certification (all on the CPU)."""

    labels: torch.Tensor  # int64 (N,)
    predictions: torch.Tensor  # int64 (N,)
    radii: torch.Tensor | None  # float64 (N,): certified L2 radius (0 if none); None for standard nets
    lipschitz: float | None

    @property
    def correct(self) -> torch.Tensor:
        return self.predictions == self.labels


def lipschitz_constant(model: nn.Module) -> float | None:
    """The model's L2 Lipschitz bound, or None for a standard (uncertifiable) network."""
    model = getattr(model, "module", model)  # DDP wraps the model
    model = getattr(model, "_orig_mod", model)  # so does torch.compile
    value = getattr(model, "lipschitz_constant", None)
    return None if value is None else float(value)


def certificate_bounds(model: nn.Module) -> float | torch.Tensor | None:
    """What certificates divide margins by: the model's pairwise bounds K (classes x classes,
    float64) when it has ``margin_lipschitz``, else its Lipschitz constant (None: a
    standard network). See ``margins.certified_radii``."""
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    lipschitz, margin_lipschitz = lipschitz_constant(model), getattr(model, "margin_lipschitz", None)
    if lipschitz is None or margin_lipschitz is None:
        return lipschitz
    return margin_lipschitz()


def activation_scale(logits: torch.Tensor, inputs: torch.Tensor, lipschitz: float = 1.0) -> torch.Tensor:
    """(N,): an L-Lipschitz network's activations are bounded by max(1, L) times the input
    norm plus the logits' scale, so its rounding error is proportional to their sum."""
    return 1 + max(1.0, lipschitz) * inputs.flatten(1).norm(dim=1) + logits.abs().amax(dim=1)


def float_error_slack(logits: torch.Tensor, inputs: torch.Tensor, lipschitz: float = 1.0) -> torch.Tensor:
    """Margin reduction (N,) covering float64 rounding error of the logits."""
    return SLACK_RELATIVE * activation_scale(logits, inputs, lipschitz)


def precision_copy(model: nn.Module, dtype: torch.dtype, device: torch.device | str) -> nn.Module:
    """An eval-mode copy of the plain model (unwrapped from DDP / torch.compile) in ``dtype``."""
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    return copy.deepcopy(model).to(device=device, dtype=dtype).eval()


@torch.no_grad()
def certify_points(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> Certificates:
    """Predictions and certified radii of every point.

    ``images`` are tensors in the model's input layout (float in the [0, 1] pixel scale, or
    uint8), or numpy arrays in the datasets' NHWC layout (uint8, or float32 after PCA).
    """
    lipschitz = lipschitz_constant(model)
    dtype = torch.float32 if lipschitz is None else torch.float64
    net = precision_copy(model, dtype, device)
    bounds = certificate_bounds(net)
    images, labels = _as_pixel_tensor(images), torch.as_tensor(labels, dtype=torch.int64).cpu()
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise ValueError("nothing to evaluate: the image set is empty")
    screen = Screen(model, lipschitz, device) if lipschitz is not None and torch.device(device).type == "cpu" else None

    def certify(batch: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = _to_float(batch, dtype, device)
        logits = net(x)
        if lipschitz is None or bounds is None:
            return logits.argmax(dim=1), None
        return logits.argmax(dim=1), certified_radii(logits, y, bounds, float_error_slack(logits, x, lipschitz))

    predictions, radii = [], []
    batches = range(0, len(images), batch_size)
    for start in progress_bar(batches, "certify", "batch", progress):
        batch, y = images[start : start + batch_size], labels[start : start + batch_size].to(device)
        predicted, radius = (
            screen.certify(batch, y, certify) if screen is not None and screen.pays else certify(batch, y)
        )
        predictions.append(predicted)
        if radius is not None:
            radii.append(radius)
    return Certificates(  # results stay on the device until here: one host sync in all
        labels=labels,
        predictions=torch.cat(predictions).cpu(),
        radii=torch.cat(radii).cpu() if radii else None,
        lipschitz=lipschitz,
    )


class Screen:
    """The float32 pass that sorts out surely misclassified points before float64
    certification (module docstring), kept while it pays: while a float32 image costs less
    than the float64 work it saves (the float64 time per image x the fraction sorted out),
    over the batches after the first. The first batch's float32 pass also proves the CPL
    norms, which its copy computes first (500 CIFAR-10 images on the trained width-16 CPL
    LipConvNet: 2.95 s against 1.9 s after): judged by it, the screen had switched itself
    off for the rest of the run, making 2,500 images 13.6 s instead of 10.8 s.
    CPU only: it reads its timings and the fraction sorted out on the host."""

    def __init__(self, model: nn.Module, lipschitz: float, device: torch.device | str):
        self.net = precision_copy(model, torch.float32, device)
        self.lipschitz, self.device = lipschitz, device
        self.pays = True  # until measured
        self.batches = 0
        self.float32_seconds = self.float64_seconds = 0.0  # per image, summed over batches after the first
        self.saved = 0.0  # the fractions sorted out, summed likewise

    def record(self, float32_seconds: float, float64_seconds: float, sorted_out: float) -> None:
        """One batch's times per image (float32 pass, float64 certification) and the fraction
        it sorted out; from the second batch on, ``pays`` compares their sums."""
        self.batches += 1
        if self.batches == 1:
            return
        self.float32_seconds += float32_seconds
        self.float64_seconds += float64_seconds
        self.saved += sorted_out
        self.pays = self.float32_seconds < self.saved * self.float64_seconds / (self.batches - 1)

    def certify(
        self, images: torch.Tensor, labels: torch.Tensor, certify: Certify
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and radii of a batch: ``certify`` (float64) on the points not sorted out,
        radius 0 and the float32 prediction on the others."""
        clock = time.perf_counter()
        predicted, wrong = self.sort_out(images, labels)
        float32_seconds = (time.perf_counter() - clock) / len(images)
        radius = torch.zeros(len(images), dtype=torch.float64, device=predicted.device)
        rest = (~wrong).nonzero().flatten()
        if len(rest):
            clock = time.perf_counter()
            predicted[rest], radii = certify(images[rest.to(images.device)], labels[rest])
            radius[rest] = radii if radii is not None else 0.0
            self.record(float32_seconds, (time.perf_counter() - clock) / len(rest), wrong.double().mean().item())
        return predicted, radius

    def sort_out(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The float32 predictions, and which points are misclassified by more than
        ``SCREEN_MARGIN`` times the activation scale."""
        x = _to_float(images, torch.float32, self.device)
        logits = self.net(x).double()
        scale = activation_scale(logits, x.double(), self.lipschitz)
        return logits.argmax(dim=1), margins(logits, labels) < -SCREEN_MARGIN * scale


def summarize_certificates(
    certificates: Certificates,
    eps: Sequence[float] = DEFAULT_EPS,
    num_classes: int | None = None,
) -> EvalResult:
    """Accuracy, CRA at each eps, the CRA curve and per-class numbers of certified points."""
    c = certificates
    num_classes = num_classes or int(max(c.labels.max(), c.predictions.max())) + 1
    result = EvalResult(
        n=len(c.labels),
        accuracy=c.correct.double().mean().item(),
        lipschitz_constant=c.lipschitz,
        cra=[],
        curve=None,
        per_class=[_class_summary(c, k, eps) for k in range(num_classes)],
    )
    if c.radii is not None:
        result.cra = cra_points(c.radii, eps)
        result.curve = dense_curve(c.radii, eps)
        result.median_radius = c.radii.median().item()
    return result


def evaluate(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    eps: Sequence[float] = DEFAULT_EPS,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
    num_classes: int | None = None,
    progress: bool = False,
) -> EvalResult:
    """Certify every point and summarize (``summarize_certificates``), with the time taken."""
    start = time.perf_counter()
    certificates = certify_points(model, images, labels, batch_size, device, progress)
    result = summarize_certificates(certificates, eps, num_classes)
    result.time_s = time.perf_counter() - start
    return result


def _class_summary(c: Certificates, k: int, eps: Sequence[float]) -> ClassResult:
    members = c.labels == k
    n = int(members.sum())
    summary = ClassResult(k, n, c.correct[members].double().mean().item() if n else None)
    if c.radii is not None:
        summary.cra = [cra(c.radii[members], e) if n else None for e in eps]
    return summary


def _as_pixel_tensor(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Numpy arrays are in the datasets' NHWC layout; tensors already in the model's layout."""
    if torch.is_tensor(images):
        return images
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"image arrays must be (N, H, W, C) as the datasets store them, got shape {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


def _to_float(batch: torch.Tensor, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    # uint8 -> float64 divides exactly-rounded in the target precision (no float32 detour)
    batch = batch.to(device)
    if batch.dtype == torch.uint8:
        return batch.to(dtype).div_(255).contiguous()
    return batch.to(dtype).contiguous()


def split_images(config: ExperimentConfig, split: str | None = None) -> tuple[np.ndarray, np.ndarray, str, int]:
    """``(images, labels, split, num_classes)`` of a run's split: its evaluation split by default.

    ``train`` is the very set the run trained on (subset and extra data included, no
    augmentation); ``test`` of a run that validated on held-out training images loads the
    test set separately.
    """
    if split not in (None, "train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got '{split}'")
    data_config = config.data
    if split == "val" and data_config.val_size == 0:
        raise ValueError("this run has no validation split (data.val_size = 0); use --split test")
    if split == "test" and data_config.val_size > 0:
        if data_config.pca_components:
            raise ValueError(
                "this run projects images onto principal components of its training split, which excludes "
                "the validation images; the test set would need another projection: use --split val or train"
            )
        data_config = dataclasses.replace(data_config, val_size=0)
    data = prepare_data(data_config)
    if split == "train":
        return data.x_train, data.y_train, "train", data.num_classes
    return data.x_eval, data.y_eval, data.eval_split, data.num_classes
