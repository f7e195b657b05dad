"""Principal components and projections onto subsets of them."""

import numpy as np
import pytest

from robustlab.data.principal_components import fit_pca, parse_component_spec


def low_rank_images(n=300, seed=0):
    """Images whose pixels vary mostly along three directions with known variances."""
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.normal(size=(48, 3)))[0]
    coefficients = rng.normal(size=(n, 3)) * [0.2, 0.1, 0.05]
    flat = 0.5 + coefficients @ directions.T + rng.normal(scale=1e-3, size=(n, 48))
    return flat.reshape(n, 4, 4, 3).astype(np.float32), directions


def test_components_are_orthonormal_and_sorted_by_variance():
    images, directions = low_rank_images()
    pca = fit_pca(images)
    assert pca.components.shape == (48, 48) and pca.dim == 48
    assert np.allclose(pca.components.T @ pca.components, np.eye(48), atol=1e-10)
    assert (np.diff(pca.variances) <= 0).all()
    # the top three components span the generating directions
    assert np.allclose(np.abs(directions.T @ pca.components[:, :3]).max(0), 1, atol=1e-3)


def test_variances_match_the_singular_values():
    images = np.random.default_rng(1).integers(0, 256, (40, 4, 4, 1), dtype=np.uint8)
    pca = fit_pca(images)
    flat = images.reshape(40, -1) / 255
    singular = np.linalg.svd(flat - flat.mean(0), compute_uv=False)
    assert np.allclose(pca.variances, singular**2 / 39, atol=1e-12)
    assert np.allclose(pca.mean, flat.mean(0))


def test_explained_variance_of_subsets():
    images, _ = low_rank_images()
    pca = fit_pca(images)
    top = pca.explained_variance("0-0")
    assert abs(top - 0.04 / (0.04 + 0.01 + 0.0025)) < 0.05
    assert pca.explained_variance("0-47") == pytest.approx(1.0)
    assert pca.explained_variance("0-2") + pca.explained_variance("3-47") == pytest.approx(1.0)
    assert pca.explained_variance(np.array([0, 1, 2])) == pca.explained_variance("0-2")


def test_projection_keeps_the_mean_and_is_idempotent():
    images = np.random.default_rng(2).integers(0, 256, (60, 4, 4, 3), dtype=np.uint8)
    pca = fit_pca(images)
    full = pca.project(images, "0-47")
    assert full.dtype == np.float32 and full.shape == images.shape
    assert np.allclose(full, images / 255, atol=1e-5)
    low = pca.project(images, "0-3,40-47")
    assert np.allclose(pca.project(low, "0-3,40-47"), low, atol=1e-5)
    assert np.allclose(pca.project(low, "4-39"), pca.mean.reshape(4, 4, 3), atol=1e-5)
    assert np.allclose(low.mean(0), images.mean(0) / 255, atol=1e-5)


def test_projection_checks_the_image_shape():
    pca = fit_pca(np.zeros((3, 4, 4, 1), np.uint8) + np.arange(3, dtype=np.uint8)[:, None, None, None])
    with pytest.raises(ValueError, match=r"do not fit this PCA of \(4, 4, 1\) images"):
        pca.project(np.zeros((2, 8, 8, 1), np.uint8), "0-1")


def test_component_specs():
    assert parse_component_spec("0-15,512-3071", 3072).tolist() == list(range(16)) + list(range(512, 3072))
    assert parse_component_spec(" 3, 1-2 ,2", 10).tolist() == [1, 2, 3]
    for bad, message in [
        ("a-b", "0-based inclusive ranges"),
        ("5-2", "outside 0-9"),
        ("0-10", "outside 0-9"),
        ("", "0-based"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_component_spec(bad, 10)


def test_a_fit_is_made_once_and_read_back_from_the_cache(tmp_path):
    from robustlab.data import principal_components as pca_module

    images, _ = low_rank_images()
    first = pca_module.cached_pca(images, tmp_path)
    (path,) = tmp_path.glob("pca-*.npz")
    stamp = path.stat().st_mtime_ns
    pca_module._FITTED.clear()  # a new process: only the file is left
    again = pca_module.cached_pca(images, tmp_path)
    assert path.stat().st_mtime_ns == stamp  # read, not refitted and rewritten
    assert np.array_equal(again.components, first.components) and again.image_shape == first.image_shape
    other = pca_module.cached_pca(low_rank_images(seed=1)[0], tmp_path)  # other images: another fit
    assert len(list(tmp_path.glob("pca-*.npz"))) == 2 and not np.array_equal(other.mean, first.mean)


def test_keeping_most_components_equals_the_direct_projection():
    images, _ = low_rank_images()
    pca = fit_pca(images)
    basis = pca.components[:, :40]  # 40 of 48: projected by removing the other 8
    flat = images.reshape(len(images), -1).astype(np.float64) - pca.mean
    direct = (flat @ basis) @ basis.T + pca.mean
    assert np.allclose(pca.project(images, "0-39").reshape(len(images), -1), direct, atol=1e-6)
