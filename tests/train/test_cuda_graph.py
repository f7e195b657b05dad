"""Training steps replayed from CUDA graphs (``train.cuda_graph``).

Everywhere: the option is refused, with advice, where it cannot work. On a CUDA machine
(the GPU session runs this file there): graphed steps end with the eager steps' weights,
buffers included (BatchNorm statistics, CPL power-iteration vectors), and a whole run
trains to the eager run's weights.
"""

import copy

import pytest
import torch
from torch import nn
from train_helpers import tiny_config

from robustlab.config import ConfigError, OptimConfig
from robustlab.nn.models import create_model
from robustlab.runs.checkpoint import load_run_model
from robustlab.train.loop import train
from robustlab.train.optim import build_optimizer, build_schedule
from robustlab.train.step import TrainStep

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
STEPS = 8


def test_cuda_graph_is_refused_on_the_cpu_with_advice(tmp_path):
    with pytest.raises(ConfigError, match="needs a CUDA device.*train.cuda_graph=false"):
        train(tiny_config("train.cuda_graph=true"), tmp_path / "run", progress=False)


def _train_steps(model: nn.Module, batches, graphed: bool, autocast) -> list[float]:
    from robustlab.train.cuda_graph import GraphedTrainStep

    optim = OptimConfig(lr=0.05)
    optimizer = build_optimizer(model.parameters(), optim)
    schedule = build_schedule(optimizer, optim, len(batches))
    step = (GraphedTrainStep if graphed else TrainStep)(model, nn.CrossEntropyLoss(), optimizer, schedule, autocast)
    return [step(x, y)[0].item() for x, y in batches]


@cuda
@pytest.mark.parametrize("autocast", [None, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("simpleconvnet", {"width": 8}),
        ("lipconvnet-cpl", {"width": 8, "depth": 1}),
        ("lipconvnet-aol", {"width": 8, "depth": 1}),
        ("lipmlp-aol", {"width": 64, "depth": 2}),
        ("lipconvnet-sll", {"width": 8, "depth": 1}),
        ("lipconvnet-soc", {"width": 8, "depth": 1}),
        ("lipconvnet-orthogonal", {"width": 8, "depth": 1}),
        ("lipmlp-orthogonal", {"width": 64, "depth": 2}),
    ],
)
def test_graphed_steps_end_with_the_eager_weights(name, kwargs, autocast):
    torch.backends.cudnn.deterministic = True
    try:
        model = create_model(name, (3, 32, 32), 10, **kwargs).cuda().train()
        twin = copy.deepcopy(model)
        generator = torch.Generator(device="cuda").manual_seed(0)
        batches = [
            (
                torch.rand(32, 3, 32, 32, device="cuda", generator=generator),
                torch.randint(0, 10, (32,), device="cuda", generator=generator),
            )
            for _ in range(STEPS)
        ]
        eager = _train_steps(model, batches, graphed=False, autocast=autocast)
        graphed = _train_steps(twin, batches, graphed=True, autocast=autocast)
    finally:
        torch.backends.cudnn.deterministic = False
    # bf16 rounds differently when cuDNN picks other kernels under capture (3e-4 seen in a CPL loss)
    tolerance = 1e-4 if autocast is None else 2e-3
    assert graphed == pytest.approx(eager, rel=tolerance, abs=1e-5)
    assert model.state_dict().keys() == twin.state_dict().keys()
    for (key, want), got in zip(model.state_dict().items(), twin.state_dict().values()):
        if autocast is not None and key.endswith(".u"):
            continue  # compared through the spectral norm below
        torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance / 10, msg=f"{name}: {key} differs")
    for (key, eager_layer), graphed_layer in zip(model.named_modules(), twin.modules()):
        if hasattr(eager_layer, "u"):  # CPL: the power-iteration vector carried across steps
            with torch.no_grad():
                # In bf16 the vector itself wanders within the nearly equal top singular vectors of a
                # freshly initialised convolution; the norm estimate it gives is what training uses.
                want, got = (layer.down(layer.u).norm() for layer in (eager_layer, graphed_layer))
            # (bf16 against float32 on a CPU: vectors 1e-3 apart, norms 2e-3 apart at most)
            torch.testing.assert_close(
                got, want, rtol=2.5 * tolerance, atol=0, msg=f"{name}: {key}'s spectral norm differs"
            )


@cuda
def test_a_graphed_run_trains_to_the_eager_runs_weights(tmp_path):
    runs = {}
    for graphed in (False, True):
        config = tiny_config("train.device=cuda", f"train.cuda_graph={str(graphed).lower()}")
        runs[graphed] = train(config, tmp_path / f"graphed-{graphed}", progress=False)
    results = {graphed: run.load_results() for graphed, run in runs.items()}
    assert results[True].steps == results[False].steps > STEPS
    assert results[True].train_loss == pytest.approx(results[False].train_loss, rel=1e-4)
    eager_model, _ = load_run_model(runs[False].path)
    graphed_model, _ = load_run_model(runs[True].path)
    for want, got in zip(eager_model.state_dict().values(), graphed_model.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@cuda
def test_compile_with_bfloat16_is_refused_on_cuda(tmp_path):
    config = tiny_config("train.device=cuda", "train.compile=true", "train.precision=bfloat16")
    with pytest.raises(ConfigError, match="NaN gradients.*train.cuda_graph=true"):
        train(config, tmp_path / "run", progress=False)


class _ReadsBackToTheHost(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10] * float(x.mean())  # float(): a device-to-host copy


@cuda
def test_a_step_that_cannot_be_captured_is_explained(tmp_path):
    from robustlab.train.cuda_graph import WARMUP_STEPS, GraphCaptureError

    model = nn.Sequential(nn.Conv2d(3, 4, 3), _ReadsBackToTheHost()).cuda()
    batches = [(torch.rand(8, 3, 8, 8, device="cuda"), torch.randint(0, 10, (8,), device="cuda"))] * (WARMUP_STEPS + 1)
    with pytest.raises(GraphCaptureError, match="cannot be captured.*train.cuda_graph=false"):
        _train_steps(model, batches, graphed=True, autocast=None)
