#!/usr/bin/env python3
"""How far the model a user runs is from the model ``evaluate`` certifies, per layer family.

    python benchmarks/deployed_gap.py [--families aol,bcop] [--steps 40] [--width 32]

For each family: a lipconvnet on the digits images, trained ``--steps`` SGD steps (so its
weights are not the initial ones), saved with ``save_safetensors`` (both forms) and loaded
back with ``load_model``. Prints, over the 360 test images, the largest logit gap between
the float64 copy that certification uses (``evaluate.precision_copy``) and each loaded float32
model (``model``: the registered network, ``plain``: its ``export_model`` copy), and the
smallest rounding allowance a certificate lowers the margins by (``float_error_slack``). A
certificate of the float64 model holds for the float32 one when 2 x gap <= allowance (a
margin is a difference of two logits).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from robustlab.certify.evaluate import float_error_slack, precision_copy
from robustlab.config import load_config
from robustlab.data.splits import prepare_data
from robustlab.nn.lipschitz import LAYER_FAMILIES
from robustlab.nn.models import create_model
from robustlab.runs.checkpoint import architecture_record, load_model, save_safetensors


def pixels(images) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255


def trained(family: str, width: int, steps: int, data) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    name = f"lipconvnet-{family}"
    kwargs = {"width": width, "depth": 2}
    model = create_model(name, data.input_shape, data.num_classes, data.mean, **kwargs)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = pixels(data.x_train).float(), torch.from_numpy(data.y_train)
    for step in range(steps):
        batch = torch.arange(step * 64, step * 64 + 64) % len(x)
        loss = F.cross_entropy(model(x[batch]) * 8, y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    config = load_config("digits", [f"model.name={name}", f"model.kwargs={kwargs}".replace("'", "")])
    return model.eval(), architecture_record(model, config)


def gaps(family: str, width: int, steps: int, data, folder: Path) -> str:
    model, record = trained(family, width, steps, data)
    x = pixels(data.x_eval)
    certified = precision_copy(model, torch.float64, "cpu")
    with torch.no_grad():
        reference = certified(x)
        allowance = float_error_slack(reference, x, float(certified.lipschitz_constant)).min().item()
        line = f"{family:<10} allowance {allowance:.2e}"
        for form in ("model", "plain"):
            path = save_safetensors(folder / f"{family}-{form}.safetensors", model, record, form)
            deployed = load_model(path)
            gap = (deployed(x.float()).double() - reference).abs().max().item()
            line += f"  {form} gap {gap:.2e} (2 x gap / allowance {2 * gap / allowance:6.2f})"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(LAYER_FAMILIES.names()))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--width", type=int, default=32)
    args = parser.parse_args()
    data = prepare_data(load_config("digits").data)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        for family in args.families.split(","):
            print(gaps(family, args.width, args.steps, data, Path(folder)), flush=True)


if __name__ == "__main__":
    main()
