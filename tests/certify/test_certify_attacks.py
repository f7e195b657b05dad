import importlib.util
import math

import pytest
import torch
from certify_helpers import LinearClassifier, linear_problem, orthonormal_rows

from robustlab.certify.attacks import ATTACKS, AttackUnavailableError, check_soundness, pgd_l2
from robustlab.certify.evaluate import certify_points
from robustlab.certify.margins import margins


def test_pgd_reaches_the_exact_worst_case_of_a_linear_classifier():
    # interior points, so the [0, 1] box does not bind: the best attack lowers the margin by sqrt(2) * eps
    weight = orthonormal_rows(3, 16, seed=2)
    model = LinearClassifier(weight).double()
    x = (0.5 + 0.05 * torch.randn(20, 16, generator=torch.Generator().manual_seed(0))).double()
    y = model(x).argmax(dim=1)
    eps = 0.02
    x_adv = pgd_l2(model, x, y, eps, steps=30)
    assert (x_adv - x).norm(dim=1).max() <= eps * (1 + 1e-9)
    drop = margins(model(x), y) - margins(model(x_adv), y)
    assert torch.allclose(drop, torch.full_like(drop, math.sqrt(2) * eps), rtol=1e-3)


def test_pgd_respects_per_sample_radii_and_the_box():
    model, _, x, y = linear_problem()
    radius = torch.linspace(0.0, 2.0, len(x))
    x_adv = pgd_l2(model, x, y, radius, steps=5)
    assert torch.all((x_adv - x).flatten(1).norm(dim=1) <= radius * (1 + 1e-5) + 1e-7)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert torch.all(margins(model(x_adv), y) <= margins(model(x), y) + 1e-6)  # never weaker than clean


def test_soundness_check_passes_for_a_true_1_lipschitz_model():
    model, _, x, y = linear_problem()
    certificates = certify_points(model, x, y)
    report = check_soundness(model, x, certificates, steps=20)
    assert report["sound"] and report["checked"] == int((certificates.radii > 0).sum()) > 200
    # PGD finds the worst direction; float32 weights are orthonormal only to ~1e-7, which the slack covers
    assert 0.99 < report["max_margin_drop_ratio"] <= 1.0 + 1e-6


def test_soundness_check_catches_a_false_lipschitz_claim():
    weight = orthonormal_rows(4, 16) * 5  # Lipschitz constant 5, claims 1
    model = LinearClassifier(weight, lipschitz_constant=1.0)
    x = torch.rand(100, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    y = model(x).argmax(dim=1)
    certificates = certify_points(model, x, y)
    report = check_soundness(model, x, certificates, steps=20)
    assert not report["sound"] and len(report["counterexamples"]) > 50
    example = report["counterexamples"][0]
    assert example["distance"] <= example["certified_radius"] * (1 + 1e-9)
    assert example["adversarial_prediction"] != example["label"]
    assert report["max_margin_drop_ratio"] > 4.9


def test_standard_networks_have_nothing_to_check():
    model, _, x, y = linear_problem()
    model.lipschitz_constant = None
    with pytest.raises(ValueError, match="no Lipschitz constant"):
        check_soundness(model, x, certify_points(model, x, y))


def _autoattack_installed() -> bool:
    return any(importlib.util.find_spec(name) for name in ("autoattack", "pyautoattack"))


def test_autoattack_missing_gives_install_hint():
    if _autoattack_installed():
        pytest.skip("autoattack or pyautoattack is installed")
    model, _, x, y = linear_problem()
    with pytest.raises(AttackUnavailableError, match=r"pip install 'robustlab\[attacks\]'.*auto-attack.*--attack pgd"):
        ATTACKS.get("autoattack")(model, x[:4], y[:4], 0.1)


@pytest.mark.slow
def test_autoattack_adapter_checks_a_tiny_model():
    if not _autoattack_installed():
        pytest.skip("needs autoattack (git) or pyautoattack (pip install 'robustlab[attacks]')")
    # 10 classes (its targeted attacks take the top 9) and 16x16 images (its Square attack needs room)
    weight = orthonormal_rows(10, 256, seed=4)
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    honest = LinearClassifier(weight)
    y = honest(x).argmax(dim=1)
    report = check_soundness(honest, x, certify_points(honest, x, y), attack="autoattack")
    assert report["sound"] and report["checked"] == 6 and report["max_margin_drop_ratio"] <= 1.0 + 1e-6
    liar = LinearClassifier(weight * 5, lipschitz_constant=1.0)  # Lipschitz constant 5, claims 1
    report = check_soundness(liar, x, certify_points(liar, x, y), attack="autoattack")
    assert not report["sound"]


def test_bad_attack_settings():
    model, _, x, y = linear_problem()
    with pytest.raises(ValueError, match="steps >= 1"):
        pgd_l2(model, x, y, 0.1, steps=0)
    with pytest.raises(KeyError, match="known attacks: autoattack, pgd"):
        ATTACKS.get("fgsm")
