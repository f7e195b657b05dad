#!/usr/bin/env python3
"""How tight LiResNet's guaranteed bounds are, on a trained run (or a fresh model).

    python benchmarks/liresnet_bounds.py RUN_DIR          # a run of the liresnet preset
    python benchmarks/liresnet_bounds.py --fresh          # random weights, digits shape

Per layer with a weight-dependent bound: the guaranteed bound robustlab certifies with
(``lipschitz_bound``: the per-frequency bound of the circular embedding, for a residual
block applied to its kernel I + W), the exact operator norm (the dense matrix of the
layer on its real input size, float64 SVD), their ratio, and for residual blocks the
looser 1 + ||W|| bound. For the network: its bound L, the product of the exact layer
norms, and the largest ||g(x) - g(x')|| / ||x - x'|| that gradient ascent finds (a lower
bound on the true constant); the pairwise bounds' largest entry against sqrt(2) L.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from robustlab.nn.lipschitz.base import conv_norm_upper_bound
from robustlab.nn.lipschitz.bounded import LiResConv2d, NormalizedLinear, SpectralLayer
from robustlab.nn.models import create_model
from robustlab.nn.verify import network_lower_bound
from robustlab.runs.checkpoint import load_run_model


def exact_norm(layer: SpectralLayer) -> float:
    kernel = layer.kernel(torch.float64).detach()
    if kernel.dim() == 2 or kernel.shape[-1] == 1:
        return float(torch.linalg.matrix_norm(kernel.flatten(1), ord=2))
    channels, size = kernel.shape[1], layer.input_size
    n = channels * size[0] * size[1]
    basis = torch.eye(n, dtype=torch.float64).view(n, channels, *size)
    matrix = F.conv2d(basis, kernel, padding=kernel.shape[-1] // 2).reshape(n, -1)
    return float(torch.linalg.matrix_norm(matrix, ord=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("--fresh", action="store_true", help="a fresh liresnet (digits shape, preset sizes)")
    args = parser.parse_args()
    if args.fresh == bool(args.run_dir):
        parser.error("give RUN_DIR or --fresh")
    if args.fresh:
        model = create_model("liresnet", (1, 8, 8), 10, width=32, depth=4, features=128).eval()
    else:
        model, _ = load_run_model(args.run_dir)
    print(f"{'layer':<6} {'type':<16} {'bound':>9} {'exact':>9} {'bound/exact':>11} {'1+||W||':>9}")
    exact_product = 1.0
    for name, layer in model.named_children():
        if isinstance(layer, NormalizedLinear):
            exact = layer.lipschitz_bound()  # an exact SVD already
        elif isinstance(layer, SpectralLayer):
            exact = exact_norm(layer)
        else:
            continue
        bound = layer.lipschitz_bound()
        exact_product *= exact
        branch = ""
        if isinstance(layer, LiResConv2d):
            branch = f"{1 + float(conv_norm_upper_bound(layer.weight.detach().double(), layer.input_size)):9.4f}"
        print(f"{name:<6} {type(layer).__name__:<16} {bound:9.4f} {exact:9.4f} {bound / exact:11.4f} {branch:>9}")
    bound = model.lipschitz_constant
    lower = network_lower_bound(model, model.input_shape, steps=100, restarts=8)
    pairs = model.margin_lipschitz()
    print(
        f"network bound L = {bound:.4f}; product of exact layer norms = {exact_product:.4f} ({bound / exact_product:.4f}x)"
    )
    print(f"gradient-ascent lower bound on the constant = {lower:.4f} (L / lower = {bound / lower:.1f})")
    print(f"largest pairwise bound = {pairs.max():.4f} = {pairs.max() / (math.sqrt(2) * bound):.3f} x sqrt(2) L")


if __name__ == "__main__":
    main()
