import pytest
import torch

from robustlab.config import OptimConfig
from robustlab.train.optim import build_optimizer, build_schedule, total_steps


def _schedule(config: OptimConfig, steps: int) -> list[tuple[float, float]]:
    """(lr, momentum) at every step."""
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = build_optimizer(params, config)
    schedule = build_schedule(optimizer, config, steps)
    values = []
    for _ in range(steps):
        values.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["momentum"]))
        optimizer.step()
        schedule.step()
    return values


def _lrs(config: OptimConfig, steps: int) -> list[float]:
    return [lr for lr, _ in _schedule(config, steps)]


def test_sgd_is_nesterov_without_weight_decay():
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimConfig(lr=0.3))
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 0.0)


def test_one_cycle_peaks_at_the_configured_lr_and_keeps_momentum():
    lrs = _lrs(OptimConfig(lr=0.5), 100)
    assert max(lrs) == pytest.approx(0.5)
    assert lrs.index(max(lrs)) == pytest.approx(30, abs=1)  # warm-up over the first 30%
    assert lrs[0] == pytest.approx(0.5 / 25) and lrs[-1] < 1e-3
    assert {momentum for _, momentum in _schedule(OptimConfig(lr=0.5), 100)} == {0.9}


def test_cycled_momentum_falls_as_the_lr_rises_as_torchs_default_does():
    values = _schedule(OptimConfig(lr=0.5, cycle_momentum=True), 100)
    peak = max(range(100), key=lambda i: values[i][0])
    momenta = [momentum for _, momentum in values]
    assert momenta[0] == pytest.approx(0.95) and momenta[peak] == pytest.approx(0.85, abs=1e-3)
    assert momenta[-1] == pytest.approx(0.95, abs=1e-3)


def test_constant_schedule():
    assert set(_lrs(OptimConfig(lr=0.2, schedule="constant"), 10)) == {0.2}


def test_total_steps_counts_fractional_epochs():
    assert total_steps(2, 10) == 20
    assert total_steps(2.5, 10) == 25
    assert total_steps(0.01, 10) == 1
    with pytest.raises(ValueError, match="epochs must be positive"):
        total_steps(0, 10)


def test_nonpositive_lr_is_refused():
    with pytest.raises(ValueError, match="optim.lr must be positive"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimConfig(lr=0.0))


def test_gradient_clipping_scales_the_step_and_is_checked():
    from robustlab.train.step import TrainStep

    def step_size(grad_clip):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        start = [p.detach().clone() for p in model.parameters()]
        config = OptimConfig(lr=1.0, momentum=0.0, schedule="constant", grad_clip=grad_clip)
        optimizer = build_optimizer(model.parameters(), config)
        schedule = build_schedule(optimizer, config, 1)
        step = TrainStep(model, lambda z, y: 100 * z.square().sum(), optimizer, schedule, grad_clip=grad_clip)
        step(torch.ones(2, 4), torch.zeros(2, dtype=torch.long))
        return torch.cat([(p.detach() - s).flatten() for p, s in zip(model.parameters(), start)]).norm().item()

    assert step_size(None) > 10
    assert step_size(0.5) == pytest.approx(0.5, rel=1e-5)  # plain SGD at lr 1 moves by the clipped norm
    with pytest.raises(ValueError, match="grad_clip must be positive"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimConfig(grad_clip=0.0))
