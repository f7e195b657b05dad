#!/usr/bin/env python3
"""CPL's eval bound per layer of LipConvNet-64 (the cpl-lcn preset's model) and the
whole model's certification time, against a baseline checkout.

    flock /tmp/robustlab-heavy.lock python benchmarks/cpl_bounds.py \\
        --baseline /tmp/base-main --images 10 [--weights STATE_DICT.pt]

Without ``--weights`` the model is the preset's at initialisation (seed 0). Per distinct
CPLConv2d (the first of each shape), in this process: the proof that proved it (Temple's
inequality, else the one ``planned_proof`` picks),
the bound's time and its ratio to a float64 Lanczos estimate of the norm (a lower bound,
converged to 1e-12), and the per-frequency (FFT) bound's ratio and time, which is what
the baseline uses for every layer of this model. Then the first N CIFAR-10 test images
are certified by ours and by the baseline, each in a fresh subprocess (``OMP_NUM_THREADS=1``,
alternating order), from the same weights: the time of ``certify_points`` and the radii.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import tempfile
import time
from pathlib import Path

import torch

from bench import cpu_name, run_in_checkout  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data/cifar10/test.npz")

WORKER = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
import robustlab
from robustlab.certify.evaluate import certify_points
weights, count, out, data = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
model = robustlab.create_model("lipconvnet-cpl", input_shape=(3, 32, 32), num_classes=10)
model.load_state_dict(torch.load(weights, weights_only=True))
test = np.load(data)
start = time.perf_counter()
certificates = certify_points(model, test["x_test"][:count], test["y_test"][:count], batch_size=500)
seconds = time.perf_counter() - start
np.save(out, certificates.radii.numpy())
print(json.dumps({"seconds": seconds, "package": robustlab.__file__}))
"""


def certify_once(source: Path, weights: Path, count: int, out: Path) -> float:
    result = run_in_checkout(source, WORKER, [str(weights), str(count), str(out), str(DATA)], "certification")
    return result["seconds"]


def per_layer(model: torch.nn.Module) -> None:
    from robustlab.nn.lipschitz import cpl
    from robustlab.nn.lipschitz.base import top_eigenpair

    seen = set()
    for name, layer in model.named_modules():
        if not isinstance(layer, cpl.CPLConv2d):
            continue
        size = tuple(layer.u.shape[-2:])
        shape = (layer.channels, layer.kernel_size, size)
        if shape in seen:
            continue
        seen.add(shape)
        layer = copy.deepcopy(layer).double().eval()
        kernel = layer.weight.detach()
        temple_verdicts: list[bool] = []
        temple_test = cpl.temple_test
        cpl.temple_test = lambda *args: temple_verdicts.append(temple_test(*args)) or temple_verdicts[-1]
        start = time.perf_counter()
        try:
            sigma = float(layer.eval_sigma())
        finally:
            cpl.temple_test = temple_test
        seconds = time.perf_counter() - start
        proof = "temple" if any(temple_verdicts) else cpl.planned_proof(layer.kernel_size, layer.channels, size)
        start = time.perf_counter()
        fft = cpl.exact_spectral_norm(cpl.frequency_matrices(kernel, size))
        fft_seconds = time.perf_counter() - start
        reference = top_eigenpair(
            lambda v: cpl._conv_gram(v, kernel, layer.padding), layer.u.double(), max_steps=3000, rtol=1e-12
        )
        norm = math.sqrt(float(reference.value))
        print(
            f"{name}: {layer.channels} ch, {layer.kernel_size[0]}x{layer.kernel_size[1]}, {size[0]}x{size[1]}: "
            f"{proof} bound / lanczos64 {sigma / norm:.6f} in {seconds:.2f} s; FFT bound {fft / norm:.6f} "
            f"in {fft_seconds:.2f} s (lanczos converged: {reference.converged})",
            flush=True,
        )


def forward_paths(model: torch.nn.Module, batch: int, repeats: int) -> None:
    """Float64 forward time of each distinct CPLConv2d (sigma cached first) with F.conv2d
    everywhere (``GEMM_CONV_PIXELS = 0``) and with the default, alternating order."""
    from robustlab.nn.lipschitz import cpl, residual

    default = residual.GEMM_CONV_PIXELS
    seen = set()
    for layer in model.modules():
        if not isinstance(layer, cpl.CPLConv2d):
            continue
        shape = (layer.channels, layer.kernel_size, tuple(layer.u.shape[-2:]))
        if shape in seen:
            continue
        seen.add(shape)
        layer = copy.deepcopy(layer).double().eval()
        x = torch.rand(batch, layer.channels, *layer.u.shape[-2:], dtype=torch.float64)
        with torch.no_grad():
            reference = layer(x)  # computes and caches sigma
            times: dict[int, list[float]] = {0: [], default: []}
            for repeat in range(repeats):
                for pixels in [0, default] if repeat % 2 == 0 else [default, 0]:
                    residual.GEMM_CONV_PIXELS = pixels
                    start = time.perf_counter()
                    out = layer(x)
                    times[pixels].append(time.perf_counter() - start)
                    assert torch.allclose(out, reference, rtol=1e-12, atol=1e-12)
        residual.GEMM_CONV_PIXELS = default
        conv, ours = min(times[0]), min(times[default])
        print(
            f"{layer.channels} ch {layer.kernel_size} {tuple(layer.u.shape[-2:])}: forward of {batch} images, conv2d {conv:.3f} s, "
            f"default {ours:.3f} s (best of {repeats}), ratio {conv / ours:.2f}",
            flush=True,
        )


def certify_twice(model: torch.nn.Module, count: int) -> None:
    """``certify_points`` twice in this process on the same weights: the second reuses the
    proved sigmas (``cpl.PROVED_SIGMAS``); the radii must be equal."""
    import numpy as np

    from robustlab.certify.evaluate import certify_points

    test = np.load(DATA)
    radii = []
    for attempt in ("first", "second"):
        start = time.perf_counter()
        certificates = certify_points(model, test["x_test"][:count], test["y_test"][:count], batch_size=500)
        print(f"{attempt} certification of {count} images: {time.perf_counter() - start:.2f} s", flush=True)
        radii.append(certificates.radii)
    print(f"radii equal: {bool(torch.equal(radii[0], radii[1]))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, type=Path, help="another robustlab checkout")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--weights", type=Path, help="a state dict of the preset's model (default: seed-0 init)")
    parser.add_argument("--skip-layers", action="store_true", help="only the whole-model certification")
    parser.add_argument("--forward", type=int, metavar="BATCH", help="only the float64 layer forward times")
    parser.add_argument("--twice", action="store_true", help="only: certify twice in this process (sigma reuse)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"processor: {cpu_name()}; load average: {os.getloadavg()}", flush=True)
    import numpy as np

    import robustlab

    torch.manual_seed(0)
    model = robustlab.create_model("lipconvnet-cpl", input_shape=(3, 32, 32), num_classes=10)
    if args.weights:
        model.load_state_dict(torch.load(args.weights, weights_only=True))
    if args.forward:
        forward_paths(model, args.forward, args.repeats)
        print(f"load average after: {os.getloadavg()}")
        return
    if args.twice:
        certify_twice(model, args.images)
        print(f"load average after: {os.getloadavg()}")
        return
    if not args.skip_layers:
        per_layer(model)
    versions = {"ours": REPO, "baseline": args.baseline.resolve()}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.pt"
        torch.save(model.state_dict(), weights)
        for repeat in range(args.repeats):
            order = list(versions) if repeat % 2 == 0 else list(reversed(versions))
            for name in order:
                seconds = certify_once(versions[name], weights, args.images, Path(tmp) / f"{name}.npy")
                print(f"{name}: {args.images} images certified in {seconds:.2f} s", flush=True)
        ours, base = np.load(Path(tmp) / "ours.npy"), np.load(Path(tmp) / "baseline.npy")
        change = ours - base
        print(
            f"radii: mean ours {ours.mean():.5f} baseline {base.mean():.5f}; ours - baseline in "
            f"[{change.min():.3g}, {change.max():.3g}]; CRA 36/255 ours {np.mean(ours > 36 / 255):.3f} "
            f"baseline {np.mean(base > 36 / 255):.3f}"
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
