import importlib
import math

import numpy as np
import pytest
import torch
from certify_helpers import LinearClassifier, linear_problem

from robustlab.certify.evaluate import certify_points, evaluate
from robustlab.nn.models import create_model
from robustlab.records import eps_label


def brute_force_radii(weight: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Exact L2 distance to the nearest decision boundary of z = W x (0 if misclassified)."""
    w = weight.double().numpy()
    flat = x.flatten(1).double().numpy()
    radii = []
    for point, label in zip(flat, y.tolist()):
        distances = [(w[label] - w[j]) @ point / np.linalg.norm(w[label] - w[j]) for j in range(len(w)) if j != label]
        radii.append(max(0.0, min(distances)))
    return np.array(radii)


def test_cra_equals_brute_force_on_a_linear_classifier():
    model, weight, x, y = linear_problem()
    exact = brute_force_radii(weight, x, y)
    eps_grid = [0.0, 0.01, 0.05, 36 / 255, 0.2]
    result = evaluate(model, x, y, eps=eps_grid)
    assert [point.cra for point in result.cra] == pytest.approx([(exact > e).mean() for e in eps_grid])
    radii = certify_points(model, x, y).radii.numpy()
    assert np.all(radii <= exact)  # never more than the truth
    assert np.allclose(radii, exact, atol=1e-4)  # and the float-error slack is tiny


def test_summary_contents():
    model, _, x, y = linear_problem()
    result = evaluate(model, x, y, eps=[36 / 255, 1.0])
    assert result.n == 300 and result.accuracy == pytest.approx(0.9)
    assert [point.label for point in result.cra] == ["36/255", "1"]
    assert result.curve.eps[0] == 0 and result.curve.cra[0] <= result.accuracy
    assert sum(c.n for c in result.per_class) == 300
    per_class_correct = sum(c.accuracy * c.n for c in result.per_class)
    assert per_class_correct == pytest.approx(270)


def test_standard_network_gets_accuracy_only():
    model, _, x, y = linear_problem()
    model.lipschitz_constant = None
    result = evaluate(model, x, y)
    assert result.cra == [] and result.curve is None and result.lipschitz_constant is None


def test_lipschitz_constant_scales_radii():
    model, _, x, y = linear_problem()
    unit = certify_points(model, x, y).radii
    model.lipschitz_constant = 2.0
    assert torch.allclose(certify_points(model, x, y).radii, unit / 2, atol=1e-5)


def test_uint8_dataset_arrays_are_read_as_nhwc():
    weight = torch.eye(2, 4)
    model = LinearClassifier(weight)
    images = np.zeros((2, 2, 2, 1), np.uint8)
    images[0, 0, 0, 0] = 255  # first pixel bright: class 0 with margin 1
    images[1, 0, 1, 0] = 255  # second pixel: class 1
    certificates = certify_points(model, images, np.array([0, 1]))
    assert certificates.predictions.tolist() == [0, 1]
    assert certificates.radii[0].item() == pytest.approx(1 / math.sqrt(2), abs=1e-4)


def test_eps_labels():
    assert [eps_label(e) for e in (36 / 255, 72 / 255, 1.0, 0.25)] == ["36/255", "72/255", "1", "0.25"]


def test_mismatched_inputs_are_explained():
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        certify_points(LinearClassifier(torch.eye(2, 4)), torch.rand(3, 4), torch.tensor([0, 1]))


def test_float32_screening_sorts_out_only_misclassified_points_and_changes_no_certificate(monkeypatch):
    """Points the float32 pass sorts out are misclassified in float64 too (radius 0 either
    way), and every certificate equals the one of float64 alone (screening off) up to rounding."""
    evaluation = importlib.import_module("robustlab.certify.evaluate")  # the package re-exports `evaluate`
    torch.manual_seed(0)
    model = create_model("lipconvnet-cpl", (1, 8, 8), 10, width=4, depth=1).eval()
    images, labels = torch.rand(120, 1, 8, 8), torch.randint(0, 10, (120,))
    screen = evaluation.Screen(model, 1.0, "cpu")
    with torch.no_grad():
        predicted, wrong = screen.sort_out(images, labels)
        logits = evaluation.precision_copy(model, torch.float64, "cpu")(images.double())
    assert 0 < int(wrong.sum()) < len(labels)
    assert (logits.argmax(dim=1)[wrong] != labels[wrong]).all()
    assert torch.equal(predicted[wrong], logits.argmax(dim=1)[wrong])

    screened = certify_points(model, images, labels, batch_size=50)
    monkeypatch.setattr(evaluation, "SCREEN_MARGIN", math.inf)  # sorts out nothing
    alone = certify_points(model, images, labels, batch_size=50)
    # equal up to float64 rounding: a GEMM's summation order may depend on its batch's size
    torch.testing.assert_close(screened.radii, alone.radii, rtol=0, atol=1e-12)
    assert torch.equal(screened.predictions, alone.predictions)
    assert (screened.radii[wrong] == 0).all() and (screened.radii > 0).any()


def test_the_screen_is_judged_after_its_first_batch_which_also_proves_the_norms():
    """A first batch whose float32 pass also proved the norms (slower than the float64 work it
    saves) keeps the screen; later batches decide by their summed times: kept while a float32
    image costs less than the float64 work it saves, dropped when it costs more."""
    evaluation = importlib.import_module("robustlab.certify.evaluate")
    model = LinearClassifier(torch.eye(2, 4))
    screen = evaluation.Screen(model, 1.0, "cpu")
    screen.record(float32_seconds=3.0, float64_seconds=2.0, sorted_out=0.5)  # proofs included: 3 > 0.5 * 2
    assert screen.pays
    screen.record(float32_seconds=0.8, float64_seconds=2.0, sorted_out=0.5)  # 0.8 < 0.5 * 2
    assert screen.pays
    screen.record(float32_seconds=1.4, float64_seconds=2.0, sorted_out=0.5)  # summed: 2.2 > 2.0
    assert not screen.pays
