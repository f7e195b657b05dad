"""Randomized smoothing against closed-form answers.

The base classifier is linear with two classes (smoothing_helpers.LinearTwoClass), so the
smoothed classifier's exact radius is |w.x + b| / ||w||. Monte-Carlo answers must converge
to it, within a tolerance derived from the sample size.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import beta, binom, norm
from smoothing_helpers import SHAPE, SIGMA, linear_model, points_at
from torch import nn

from robustlab.certify import smoothing
from robustlab.config import load_config


@pytest.fixture
def linear():
    return linear_model()


def radius_tolerance(true_radius: float, n: int, z: float = 4.0) -> float:
    """z standard errors of sigma * PhiInv(p_hat) (delta method) with n samples."""
    p = norm.cdf(abs(true_radius) / SIGMA)
    return z * SIGMA * math.sqrt(p * (1 - p) / n) / norm.pdf(norm.ppf(p))


# ---------------------------------------------------------------------------------------
# Statistics


@pytest.mark.parametrize("k, n, alpha", [(1, 10, 0.05), (50, 100, 0.001), (99_990, 100_000, 0.001), (7, 7, 0.01)])
def test_clopper_pearson_lower_bound_is_the_beta_quantile(k, n, alpha):
    bound = smoothing.clopper_pearson_lower(k, n, alpha)
    assert bound == pytest.approx(beta.ppf(alpha, k, n - k + 1), rel=1e-12)
    # the defining property: at the bound, seeing k or more successes has probability alpha
    assert binom.sf(k - 1, n, bound) == pytest.approx(alpha, rel=1e-6)


def test_clopper_pearson_lower_bound_of_zero_successes_is_zero():
    assert smoothing.clopper_pearson_lower(0, 1000, 0.001) == 0.0


def test_estimated_radius_is_symmetric_and_clipped():
    assert smoothing.estimated_radius(0.8, 0.2, SIGMA) == pytest.approx(SIGMA * norm.ppf(0.8))
    assert smoothing.estimated_radius(0.2, 0.8, SIGMA) == pytest.approx(-SIGMA * norm.ppf(0.8))
    # all votes for one class: the frequencies are clipped to 0.99 / 0.01
    assert smoothing.estimated_radius(1.0, 0.0, SIGMA) == pytest.approx(SIGMA * norm.ppf(0.99))


# ---------------------------------------------------------------------------------------
# Convergence to the analytic radius


def test_estimate_converges_to_the_exact_radius(linear):
    radii = [0.1, 0.3, -0.2]  # the last one lies on the class-0 side but is labelled 1
    n = 20_000
    result = smoothing.estimate(linear, points_at(linear, radii), [1, 1, 1], SIGMA, n=n, batch_size=8192)
    for record, r in zip(result.records, radii):
        assert record["radius"] == pytest.approx(r, abs=radius_tolerance(r, n))
        assert record["correct"] == (r > 0)
    assert result.accuracy == pytest.approx(2 / 3)
    assert "not a certificate" in result.guarantee


def test_bfloat16_estimate_also_converges_and_is_labelled(linear):
    radii = [0.1, -0.2]
    n = 20_000
    result = smoothing.estimate(linear, points_at(linear, radii), [1, 1], SIGMA, n=n, precision="bfloat16")
    for record, r in zip(result.records, radii):
        assert record["radius"] == pytest.approx(r, abs=radius_tolerance(r, n) + 0.01)  # + bf16 rounding
    assert result.params.precision == "bfloat16"
    with pytest.raises(ValueError, match="precision must be 'float32' or 'bfloat16'"):
        smoothing.estimate(linear, points_at(linear, radii), [1, 1], SIGMA, precision="float16")


def test_statistics_work_element_wise():
    bounds = smoothing.clopper_pearson_lower(np.array([0, 10, 990]), 1000, 0.001)
    assert bounds.tolist() == [
        0.0,
        smoothing.clopper_pearson_lower(10, 1000, 0.001),
        smoothing.clopper_pearson_lower(990, 1000, 0.001),
    ]
    radii = smoothing.estimated_radius(np.array([0.9, 0.3]), np.array([0.1, 0.6]), SIGMA)
    assert radii.tolist() == [smoothing.estimated_radius(0.9, 0.1, SIGMA), smoothing.estimated_radius(0.3, 0.6, SIGMA)]


def test_certified_radius_is_below_the_exact_radius_and_close_to_it(linear):
    radii = [0.1, 0.3]
    n = 20_000
    result = smoothing.certify(linear, points_at(linear, radii), [1, 1], SIGMA, n0=100, n=n, alpha=0.001)
    for record, r in zip(result.records, radii):
        assert record["prediction"] == 1 and record["correct"]
        # the Clopper-Pearson bound sits about z_alpha = 3.09 standard errors below the estimate
        assert r - radius_tolerance(r, n, z=3.09 + 4) < record["radius"] < r
    assert result.abstain_rate == 0.0


def test_certify_and_predict_abstain_on_the_decision_boundary(linear):
    x = points_at(linear, [0.0, 0.0, 0.3])
    certified = smoothing.certify(linear, x, [1, 0, 1], SIGMA, n=20_000)
    predicted = smoothing.predict(linear, x, [1, 0, 1], SIGMA, n=20_000)
    for result in (certified, predicted):
        assert [r["prediction"] for r in result.records] == [smoothing.ABSTAIN, smoothing.ABSTAIN, 1]
        assert [r["correct"] for r in result.records] == [False, False, True]
        assert result.abstain_rate == pytest.approx(2 / 3)
    # abstentions count as failures in the certified accuracy curve
    assert certified.cra[0].cra == pytest.approx(1 / 3)


def test_estimate_is_near_zero_on_the_boundary_and_negative_when_misclassified(linear):
    n = 20_000
    result = smoothing.estimate(linear, points_at(linear, [0.0, 0.2]), [1, 0], SIGMA, n=n)
    on_boundary, wrong = result.records
    assert abs(on_boundary["radius"]) < radius_tolerance(0.0, n)
    assert wrong["radius"] == pytest.approx(-0.2, abs=radius_tolerance(0.2, n))
    assert not wrong["correct"] and wrong["prediction"] == 1


def test_curve_counts_points_whose_radius_exceeds_eps(linear):
    radii = [0.05, 0.2, 0.35, 0.5, -0.3]
    result = smoothing.estimate(linear, points_at(linear, radii), [1] * 5, SIGMA, n=20_000, eps=[0.1, 0.3, 0.45])
    assert [p.cra for p in result.cra] == pytest.approx([3 / 5, 2 / 5, 1 / 5])
    assert [p.label for p in result.cra] == ["0.1", "0.3", "0.45"]
    # the dense curve: CRA falls from the accuracy to 0 as the radius grows past the largest
    curve = dict(zip(result.curve.eps, result.curve.cra))
    assert curve[0.0] == pytest.approx(4 / 5) and curve[max(curve)] == 0.0
    assert list(curve.values()) == sorted(curve.values(), reverse=True)


# ---------------------------------------------------------------------------------------
# Seeds, batching and input formats


def test_same_seed_same_result_and_other_seed_other_noise(linear):
    x = points_at(linear, [0.05, 0.0, -0.05])
    first = smoothing.estimate(linear, x, [1, 1, 1], SIGMA, n=3000, seed=5)
    again = smoothing.estimate(linear, x, [1, 1, 1], SIGMA, n=3000, seed=5)
    other = smoothing.estimate(linear, x, [1, 1, 1], SIGMA, n=3000, seed=6)
    assert first.records == again.records
    assert first.records != other.records


def test_result_does_not_depend_on_batch_size_or_chunking(linear):
    x = points_at(linear, [0.05, 0.0, -0.05, 0.1])
    labels = [1, 1, 0, 1]
    wide = smoothing.certify(linear, x, labels, SIGMA, n=2500, batch_size=10_000)
    narrow = smoothing.certify(linear, x, labels, SIGMA, n=2500, batch_size=300, chunk_size=1)
    assert wide.records == narrow.records


def test_noise_depends_on_the_image_index_not_its_position(linear):
    x = points_at(linear, [0.0, 0.02])
    together = smoothing.estimate(linear, x, [1, 1], SIGMA, n=2000, indices=[10, 11])
    alone = smoothing.estimate(linear, x[1:], [1], SIGMA, n=2000, indices=[11])
    assert together.records[1] == alone.records[0]


def test_uint8_nhwc_arrays_give_the_same_counts_as_float_tensors(linear):
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 4, 4, 1), dtype=np.uint8)
    as_tensor = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    from_array = smoothing.estimate(linear, pixels, [0, 1, 0], SIGMA, n=1000)
    from_tensor = smoothing.estimate(linear, as_tensor, [0, 1, 0], SIGMA, n=1000)
    assert from_array.records == from_tensor.records


def test_counts_match_a_plain_loop_over_the_same_noise(linear):
    x = points_at(linear, [0.0, 0.1])
    seeds = [smoothing.noise_seed(0, i, "estimate") for i in range(2)]
    counts = smoothing.count_predictions(linear, x, seeds, num_samples=1500, sigma=SIGMA, batch_size=700)
    for image, seed, row in zip(x, seeds, counts):
        generator = torch.Generator().manual_seed(seed)
        noise = torch.cat([torch.empty(size, *SHAPE).normal_(0, SIGMA, generator=generator) for size in (1000, 500)])
        votes = linear(image + noise).argmax(1)
        assert row.tolist() == torch.bincount(votes, minlength=2).tolist()


def test_the_model_is_put_in_eval_mode_and_restored():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.BatchNorm1d(3)).train()
    smoothing.estimate(model, torch.rand(2, *SHAPE), [0, 1], SIGMA, n=500)
    assert model.training
    assert model[2].num_batches_tracked.item() == 0  # BatchNorm statistics were not updated


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sigma": 0.0}, "sigma must be > 0"),
        ({"n": 0}, "n must be a positive integer"),
        ({"labels": [0]}, "one label and one index per image"),
        ({"clip": (0.5, 0.1)}, "clip must be two frequencies"),
    ],
)
def test_bad_arguments_are_explained(linear, kwargs, message):
    arguments = {"labels": [0, 1], "sigma": SIGMA, **kwargs}
    with pytest.raises(ValueError, match=message):
        smoothing.estimate(linear, torch.rand(2, *SHAPE), **arguments)


def test_bad_alpha_and_image_formats_are_explained(linear):
    with pytest.raises(ValueError, match="alpha must lie strictly between 0 and 1"):
        smoothing.certify(linear, torch.rand(2, *SHAPE), [0, 1], SIGMA, alpha=1.5)
    with pytest.raises(ValueError, match="NHWC, uint8 or float32"):
        smoothing.estimate(linear, np.zeros((2, 4, 4, 1), np.int32), [0, 1], SIGMA)


def test_results_file_starts_with_its_settings(linear, tmp_path):
    output = tmp_path / "smoothing-estimate.jsonl"
    smoothing.estimate(linear, points_at(linear, [0.1]), [1], SIGMA, n=500, output=output)
    header, record = [json.loads(line) for line in output.read_text().splitlines()]
    assert header["header"]["method"] == "estimate" and header["header"]["sigma"] == SIGMA
    assert header["header"]["model_hash"] == smoothing.model_fingerprint(linear)
    assert record["index"] == 0 and record["label"] == 1


def test_the_smoothing_preset_is_the_papers_base_classifier():
    config = load_config("smoothing")
    assert (config.model.name, config.data.name) == ("simpleconvnet", "cifar10")
    assert config.augment.noise_std == 1 / 8 and config.optim.lr == 0.3
    assert (config.loss.name, config.loss.temperature) == ("ce", 8.0)  # 8 * CE(logits / 8)
