"""LiResNet: layers whose Lipschitz constant is bounded from their weights, and the network.

The reference for every bound is exact: the dense matrix of the layer's operator on a small
input (the layer applied to every basis image) and its SVD in float64.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from nn_helpers import jacobian_norm

from robustlab.nn.export import export_model
from robustlab.nn.lipschitz.base import conv_norm_upper_bound
from robustlab.nn.lipschitz.bounded import (
    BoundedConv2d,
    BoundedLinear,
    LiResConv2d,
    NormalizedLinear,
    SpectralLayer,
)
from robustlab.nn.models import create_model
from robustlab.nn.verify import verify_model

SIZE = (5, 5)
DIGITS = (1, 8, 8)
SMALL = {"width": 4, "depth": 2, "features": 8}


def operator_matrix(layer: SpectralLayer, size=SIZE) -> torch.Tensor:
    """The dense matrix of the layer's linear part (no bias) on ``size`` images, in float64."""
    kernel = layer.kernel(torch.float64).detach()
    channels = kernel.shape[1]
    n = channels * size[0] * size[1]
    basis = torch.eye(n, dtype=torch.float64).view(n, channels, *size)
    return F.conv2d(basis, kernel, padding=kernel.shape[-1] // 2).reshape(n, -1).t()


def exact_norm(matrix: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(matrix, ord=2))


def random_block(seed: int, scale: float = 0.3) -> LiResConv2d:
    torch.manual_seed(seed)
    block = LiResConv2d(6, 3, input_size=SIZE)
    with torch.no_grad():
        block.weight.normal_(0, scale)
    return block


@pytest.mark.parametrize("seed", range(3))
def test_block_bound_is_above_the_exact_norm_and_below_one_plus_the_branch(seed):
    block = random_block(seed)
    exact = exact_norm(operator_matrix(block))
    bound = block.lipschitz_bound()
    branch = float(conv_norm_upper_bound(block.weight.detach().double(), SIZE))
    assert exact <= bound < 1 + branch  # the bound of I + W is tighter than 1 + ||W||
    assert bound <= 1.15 * exact  # and not loose, even on 5x5 images


def test_power_iteration_from_a_bad_start_falls_below_the_norm_the_bound_does_not():
    """What a truncated power iteration would certify with (as other libraries do) can be far
    too low; the bound is computed from the weights, with no iterate in it."""
    block = random_block(0)
    matrix = operator_matrix(block)
    _, _, right = torch.linalg.svd(matrix)
    vector = right[1] + 1e-6 * right[0]  # almost orthogonal to the top right singular vector
    kernel = block.kernel(torch.float64).detach()
    for _ in range(3):
        image = F.conv2d(vector.view(1, 6, *SIZE), kernel, padding=1)
        vector = F.conv_transpose2d(image, kernel, padding=1).flatten()
        vector = vector / vector.norm()
    estimate = float(F.conv2d(vector.view(1, 6, *SIZE), kernel, padding=1).norm())
    exact = exact_norm(matrix)
    assert estimate < 0.99 * exact  # the power-iteration estimate is below the truth
    assert block.lipschitz_bound() >= exact  # robustlab's bound is not


def test_stem_neck_and_dense_bounds():
    torch.manual_seed(0)
    stem = BoundedConv2d(3, 6, 3, input_size=SIZE)
    assert exact_norm(operator_matrix(stem)) <= stem.lipschitz_bound() <= 1.15 * exact_norm(operator_matrix(stem))
    neck = BoundedConv2d(12, 4, 1)  # 1x1: the norm of its matrix, at any size
    assert neck.lipschitz_bound() == pytest.approx(exact_norm(operator_matrix(neck)), rel=1e-12)
    dense = BoundedLinear(7, 5)
    assert dense.lipschitz_bound() == pytest.approx(exact_norm(dense.weight.detach().double()), rel=1e-12)
    head = NormalizedLinear(7, 4)
    rows = F.normalize(head.weight.detach().double(), dim=1)
    assert head.lipschitz_bound() == pytest.approx(exact_norm(rows), rel=1e-12)
    pairs = torch.stack([torch.stack([(rows[i] - rows[j]).norm() for j in range(4)]) for i in range(4)])
    torch.testing.assert_close(head.pair_norms(exact=True), pairs)
    torch.testing.assert_close(head.pair_norms().double(), pairs, atol=1e-5, rtol=0)


def test_training_estimate_converges_to_the_bound_and_carries_gradients():
    block = random_block(1)
    block.update_vectors(200)
    estimate = block.lipschitz_estimate()
    assert float(estimate.detach()) == pytest.approx(block.lipschitz_bound(), rel=1e-4)
    estimate.backward()
    assert block.weight.grad is not None and block.weight.grad.abs().sum() > 0


def test_the_bound_follows_the_weights_and_training_forwards_update_the_vectors():
    block = random_block(2)
    before, vectors = block.lipschitz_bound(), block.u.clone()
    block.train()
    block(torch.randn(2, 6, *SIZE))
    assert not torch.equal(block.u, vectors)
    with torch.no_grad():
        block.weight.mul_(2)
    assert block.lipschitz_bound() > before  # the cache saw the in-place change
    block.eval()
    vectors = block.u.clone()
    block(torch.randn(2, 6, *SIZE))
    assert torch.equal(block.u, vectors)


def test_block_starts_as_the_identity_and_refuses_other_sizes():
    block = LiResConv2d(4, 3, input_size=(6, 6))
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(block(x), x)
    assert block.lipschitz_bound() == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="input_size"):
        block(torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="needs input_size"):
        LiResConv2d(4, 3)


def trained_liresnet(input_shape=DIGITS, steps: int = 10, **kwargs) -> torch.nn.Module:
    """A LiResNet after a few steps of a loss that inflates its outputs (larger constants)."""
    torch.manual_seed(0)
    model = create_model("liresnet", input_shape, 10, **(kwargs or SMALL))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        loss = -model(torch.rand(16, *input_shape)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_network_bound_is_above_the_jacobian_norm_everywhere_sampled():
    model = trained_liresnet()
    bound, pairs = model.lipschitz_constant, model.margin_lipschitz()
    assert bound > 1.5  # training moved it: this is not a 1-Lipschitz network
    for seed in range(8):
        x = torch.rand(1, *DIGITS, generator=torch.Generator().manual_seed(seed))
        jacobian = torch.autograd.functional.jacobian(
            lambda v: model(v.view(1, *DIGITS)).flatten(), x.flatten()
        ).double()
        assert exact_norm(jacobian) <= bound
        differences = (jacobian[:, None] - jacobian[None]).norm(dim=-1)  # each logit pair's gradient
        assert (differences <= pairs + 1e-9).all()
    assert pairs.max() <= 2**0.5 * bound + 1e-12  # never looser than the sqrt(2) L rule


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_liresnet_sizes_for_mnist_and_cifar(shape):
    model = create_model("liresnet", shape, 10, width=4, depth=1, features=8)
    assert model(torch.rand(2, *shape)).shape == (2, 10)
    blocks = [m for m in model.modules() if isinstance(m, LiResConv2d)]
    assert [b.input_size for b in blocks] == [(shape[1] // 2, shape[2] // 2)]
    with pytest.raises(ValueError, match="must be even for MaxMin"):
        create_model("liresnet", shape, 10, width=5)


def test_state_dict_round_trip_keeps_outputs_bound_and_vectors():
    model = trained_liresnet(steps=3)
    clone = create_model("liresnet", DIGITS, 10, **SMALL)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    x = torch.rand(5, *DIGITS)
    torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)
    assert clone.lipschitz_constant == model.lipschitz_constant
    for mine, theirs in zip(model.buffers(), clone.buffers()):
        assert torch.equal(mine, theirs)


def test_export_gives_plain_modules_with_identical_outputs_and_the_same_bound():
    model = trained_liresnet(steps=3)
    exported = export_model(model)
    assert not any(isinstance(m, (SpectralLayer, NormalizedLinear)) for m in exported.modules())
    x = torch.rand(5, *DIGITS)
    torch.testing.assert_close(exported(x), model(x), rtol=0, atol=1e-6)
    assert exported.lipschitz_constant == model.lipschitz_constant  # frozen, not recomputed from nothing


def test_float64_copy_has_the_same_bound():
    model = trained_liresnet(steps=3)
    wide = copy.deepcopy(model).double()
    assert wide.lipschitz_constant == pytest.approx(model.lipschitz_constant, rel=1e-12)
    assert jacobian_norm(wide, torch.rand(1, *DIGITS, dtype=torch.float64)) <= wide.lipschitz_constant


def test_verify_checks_each_layer_and_the_network_against_its_claimed_bound():
    model = trained_liresnet(steps=5)
    report = verify_model(model, DIGITS, attack_steps=10)
    assert report["ok"] and report["claimed_lipschitz"] == model.lipschitz_constant > 1
    blocks = [row for row in report["layers"] if row["type"] == "LiResConv2d"]
    assert all(row["norm"] <= row["upper_bound"] == row["claimed"] for row in blocks)
    stem = model[1]
    stem.lipschitz_bound = lambda: 0.5  # a layer that under-reports its constant is caught
    report = verify_model(model, DIGITS, attack_steps=10)
    assert not report["ok"] and [row["name"] for row in report["layers"] if not row["ok"]] == ["1"]
