"""Validation splits, balanced subsets, channel means and the prepare_data pipeline."""

import numpy as np
import pytest

from robustlab.config import DataConfig
from robustlab.data.datasets import DatasetError, load_dataset
from robustlab.data.principal_components import fit_pca
from robustlab.data.splits import channel_means, prepare_data
from robustlab.data.subsets import balanced_subset, reference_split, train_val_split

BALANCED = np.repeat(np.arange(10), 50)  # 500 labels, 50 per class
IMBALANCED = np.concatenate([np.zeros(3, int), np.ones(40, int), np.full(17, 2)])


# ---------------------------------------------------------------------------------------
# train_val_split


def test_validation_split_is_a_stratified_partition():
    train, val = train_val_split(BALANCED, 100, seed=1111)
    assert len(val) == 100 and len(train) == 400
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(500))
    assert np.bincount(BALANCED[val]).tolist() == [10] * 10


def test_validation_split_follows_the_class_proportions_of_imbalanced_data():
    _, val = train_val_split(IMBALANCED, 30, seed=0)
    assert np.bincount(IMBALANCED[val], minlength=3).tolist() == [
        2,
        20,
        8,
    ]  # quotas 1.5, 20, 8.5: the tie goes to the lower class


def test_validation_split_is_seeded():
    first, second = train_val_split(BALANCED, 50, 7), train_val_split(BALANCED, 50, 7)
    assert np.array_equal(first[1], second[1])
    assert not np.array_equal(first[1], train_val_split(BALANCED, 50, 8)[1])


def test_validation_split_size_is_checked():
    assert len(train_val_split(BALANCED, 0, 0)[1]) == 0
    with pytest.raises(ValueError, match="val_size must be between 0 and 499"):
        train_val_split(BALANCED, 500, 0)


def test_reference_split_is_the_reference_codes_shuffle():
    # The reference code: indices = list(range(n)); np.random.seed(1111); np.random.shuffle(indices);
    # train = indices[:n - val_size], validation = the rest.
    indices = list(range(500))
    np.random.seed(1111)
    np.random.shuffle(indices)
    train, val = reference_split(500, 100, seed=1111)
    assert np.array_equal(val, np.sort(indices[400:])) and np.array_equal(train, np.sort(indices[:400]))
    assert not np.array_equal(val, reference_split(500, 100, seed=1112)[1])
    with pytest.raises(ValueError, match="val_size must be between 0 and 499"):
        reference_split(500, 500, 0)


def test_prepare_data_draws_the_configured_split():
    stratified = prepare_data(DataConfig(val_size=100))
    reference = prepare_data(DataConfig(val_size=100, split="reference"))
    full = load_dataset("digits")
    _, expected = reference_split(len(full.y_train), 100, 1111)
    assert np.array_equal(reference.x_eval, full.x_train[expected])
    assert np.array_equal(reference.y_eval, full.y_train[expected])
    assert not np.array_equal(stratified.y_eval, reference.y_eval)
    assert len(reference.x_train) == len(full.x_train) - 100


# ---------------------------------------------------------------------------------------
# balanced_subset


@pytest.mark.parametrize("n", [1, 9, 10, 11, 37, 499, 500])
def test_subset_has_the_exact_size_and_balanced_classes(n):
    subset = balanced_subset(BALANCED, n, seed=3)
    counts = np.bincount(BALANCED[subset], minlength=10)
    assert len(np.unique(subset)) == n == counts.sum()
    assert counts.max() - counts.min() <= 1


def test_subsets_are_nested_and_seeded():
    previous = set()
    for n in range(1, 501, 7):
        current = set(balanced_subset(BALANCED, n, seed=5).tolist())
        assert previous <= current
        previous = current
    assert np.array_equal(balanced_subset(BALANCED, 30, 5), balanced_subset(BALANCED, 30, 5))
    assert not np.array_equal(balanced_subset(BALANCED, 30, 5), balanced_subset(BALANCED, 30, 6))


def test_remainder_goes_to_classes_in_a_seeded_order():
    extra = {s: np.flatnonzero(np.bincount(BALANCED[balanced_subset(BALANCED, 13, s)]) == 2).tolist() for s in range(6)}
    assert all(len(classes) == 3 for classes in extra.values())
    assert len({tuple(c) for c in extra.values()}) > 1  # not always the same three classes


def test_a_class_that_runs_out_leaves_the_rest_balanced():
    subset = balanced_subset(IMBALANCED, 30, seed=0)
    assert np.bincount(IMBALANCED[subset]).tolist() == [3, 14, 13]
    assert len(balanced_subset(IMBALANCED, 60, seed=0)) == 60


def test_subset_size_is_checked():
    for bad in (0, 501):
        with pytest.raises(ValueError, match="subset size must be between 1 and 500"):
            balanced_subset(BALANCED, bad, 0)


# ---------------------------------------------------------------------------------------
# channel_means


def test_channel_means_of_uint8_and_float_images():
    images = np.zeros((2, 4, 4, 3), np.uint8)
    images[..., 0], images[0, ..., 1], images[..., 2] = 255, 51, 0
    assert np.allclose(channel_means(images), [1.0, 0.1, 0.0])
    assert channel_means(images).dtype == np.float32
    assert np.allclose(channel_means(images.astype(np.float32) / 255), [1.0, 0.1, 0.0])
    with pytest.raises(ValueError, match="non-empty"):
        channel_means(images[:0])


# ---------------------------------------------------------------------------------------
# prepare_data


def test_default_config_evaluates_on_the_test_set():
    data = prepare_data(DataConfig())
    assert data.eval_split == "test" and len(data.x_train) == 1437 == data.full_train_size
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert np.allclose(data.mean, channel_means(data.x_train))


def test_validation_subset_and_full_size():
    digits = load_dataset("digits")
    data = prepare_data(DataConfig(val_size=137, subset_size=95, subset_seed=2))
    assert data.eval_split == "val" and len(data.x_eval) == 137
    assert data.full_train_size == 1437 - 137 and len(data.x_train) == 95
    assert np.bincount(data.y_train).max() - np.bincount(data.y_train).min() <= 1
    # validation images come from the training split, never from the test set
    train_rows = {row.tobytes() for row in digits.x_train}
    assert all(image.tobytes() in train_rows for image in data.x_eval)
    assert np.allclose(data.mean, channel_means(data.x_train))


def test_extra_generated_data_is_appended(tmp_path):
    path = tmp_path / "generated.npz"
    images = np.full((40, 8, 8, 1), 255, np.uint8)
    np.savez(path, image=images, label=np.arange(40) % 10)
    data = prepare_data(DataConfig(subset_size=20, extra_path=str(path), extra_size=10))
    assert len(data.x_train) == 30 and data.full_train_size == 1437
    assert (data.x_train[20:] == 255).all() and np.bincount(data.y_train[20:]).tolist() == [1] * 10
    assert len(prepare_data(DataConfig(extra_path=str(path), extra_size=-1)).x_train) == 1477
    with pytest.raises(DatasetError, match="extra_size=41, but .* holds 40 images"):
        prepare_data(DataConfig(extra_path=str(path), extra_size=41))


def test_extra_data_of_another_shape_is_refused(tmp_path):
    path = tmp_path / "generated.npz"
    np.savez(path, image=np.zeros((4, 32, 32, 3), np.uint8), label=np.zeros(4, int))
    with pytest.raises(DatasetError, match=r"generated images have shape \(32, 32, 3\), the dataset \(8, 8, 1\)"):
        prepare_data(DataConfig(extra_path=str(path), extra_size=-1))


def test_pca_projection_uses_the_training_split_components():
    data = prepare_data(DataConfig(val_size=100, subset_size=50, pca_components="0-3"))
    assert data.x_train.dtype == np.float32 and data.x_eval.dtype == np.float32
    assert data.x_train.shape == (50, 8, 8, 1) and data.x_eval.shape == (100, 8, 8, 1)
    # four components: the centred images span at most four dimensions
    centred = data.x_eval.reshape(100, -1) - data.x_eval.reshape(100, -1).mean(0)
    assert np.linalg.matrix_rank(centred, tol=1e-4) <= 4
    assert np.allclose(data.mean, channel_means(data.x_train))
    digits = load_dataset("digits")
    train, _ = train_val_split(digits.y_train, 100, seed=1111)
    subset = train[balanced_subset(digits.y_train[train], 50, seed=0)]
    expected = fit_pca(digits.x_train[train]).project(digits.x_train[subset], "0-3")
    assert np.allclose(data.x_train, expected, atol=1e-6)
