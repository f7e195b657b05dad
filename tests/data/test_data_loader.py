"""DeviceLoader and the on-device augmentation (CPU; the same code runs on CUDA)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlab.config import AugmentConfig
from robustlab.data.loader import DeviceLoader, augment_batch, epoch_generator

NO_AUGMENT = dict(crop_padding=0, flip=False, cutout=0)


def random_images(n=64, size=16, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def one_batch(images, augment, batch_size=None, **kwargs):
    loader = DeviceLoader(
        images, np.zeros(len(images)), batch_size or len(images), augment=augment, shuffle=False, **kwargs
    )
    return next(iter(loader))[0]


def test_evaluation_loader_yields_every_image_in_order_as_float():
    images = random_images(10)
    loader = DeviceLoader(images, np.arange(10), batch_size=4, shuffle=False)
    batches = list(loader)
    assert len(loader) == 3 == len(batches) and [len(y) for _, y in batches] == [4, 4, 2]
    x = torch.cat([b[0] for b in batches])
    assert x.dtype == torch.float32 and x.shape == (10, 3, 16, 16)
    assert torch.equal(x, torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    assert torch.cat([b[1] for b in batches]).tolist() == list(range(10))


def test_shuffled_epochs_visit_every_example_once():
    loader = DeviceLoader(random_images(10), np.arange(10), batch_size=3, drop_last=True)
    labels = torch.cat([y for _, y in loader])
    assert len(loader) == 3 and len(labels) == 9 and len(set(labels.tolist())) == 9
    assert labels.dtype == torch.int64 and labels.tolist() != sorted(labels.tolist())


def test_fill_last_completes_the_ragged_batch_from_the_same_epoch():
    loader = DeviceLoader(random_images(10), np.arange(10), batch_size=4, fill_last=True)
    batches = [y for _, y in loader]
    assert len(loader) == 3 and [len(y) for y in batches] == [4, 4, 4]
    labels = torch.cat(batches).tolist()
    assert sorted(set(labels)) == list(range(10))  # every image once per epoch ...
    assert labels[10:] == labels[:2]  # ... and the filler repeats the epoch's first images
    small = DeviceLoader(random_images(3), np.arange(3), batch_size=4, fill_last=True)
    assert [len(y) for _, y in small] == [3]  # a set smaller than a batch is one batch
    with pytest.raises(ValueError, match="exclude each other"):
        DeviceLoader(random_images(3), np.arange(3), batch_size=2, fill_last=True, drop_last=True)


def test_crop_is_a_shifted_window_of_the_reflect_padded_image():
    images = random_images(32)
    x = one_batch(images, AugmentConfig(crop_padding=4, flip=False, cutout=0))
    padded = F.pad(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, (4, 4, 4, 4), mode="reflect")
    shifts = []
    for out, pad in zip(x, padded):
        matches = [
            (dy, dx) for dy in range(9) for dx in range(9) if torch.equal(out, pad[:, dy : dy + 16, dx : dx + 16])
        ]
        assert len(matches) == 1
        shifts.append(matches[0])
    assert len(set(shifts)) > 10  # per-sample shifts


def test_flip_mirrors_about_half_of_the_images():
    images = random_images(2000, size=4, channels=1)
    x = one_batch(images, AugmentConfig(crop_padding=0, flip=True, cutout=0))
    original = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    flipped = (x == original.flip(-1)).flatten(1).all(1)
    kept = (x == original).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert 0.45 < flipped.float().mean().item() < 0.55


def test_cutout_fills_exactly_one_square_with_the_mean():
    images = np.full((50, 16, 16, 3), 200, np.uint8)
    mean = np.array([0.1, 0.2, 0.3], np.float32)
    x = one_batch(images, AugmentConfig(crop_padding=0, flip=False, cutout=8), mean=mean)
    filled = x == torch.tensor(mean).view(1, 3, 1, 1)
    assert bool((filled.all(1) == filled.any(1)).all())  # all channels or none
    square = filled[:, 0]
    assert square.sum(dim=(1, 2)).tolist() == [64] * 50
    rows, cols = square.any(2), square.any(1)
    assert rows.sum(1).tolist() == [8] * 50 and cols.sum(1).tolist() == [8] * 50
    assert len({tuple(r.nonzero().flatten().tolist()) for r in rows}) > 3  # positions vary
    assert bool((x[~filled] == 200 / 255).all())


def test_cutout_fill_defaults_to_the_training_mean():
    images = random_images(40)
    loader = DeviceLoader(images, np.zeros(40), 40, augment=AugmentConfig(**NO_AUGMENT))
    assert torch.allclose(loader.mean, torch.from_numpy(images.reshape(-1, 3).mean(0) / 255).float())


def test_per_batch_draws_one_transform_for_the_whole_batch():
    same = np.repeat(random_images(1), 32, axis=0)
    cfg = AugmentConfig(crop_padding=4, flip=True, cutout=8, per_batch=True)
    x = one_batch(same, cfg)
    assert all(torch.equal(x[0], image) for image in x)
    x = one_batch(same, AugmentConfig(crop_padding=4, flip=True, cutout=8))
    assert not all(torch.equal(x[0], image) for image in x)


def test_noise_is_gaussian_and_not_clamped():
    images = np.full((200, 16, 16, 1), 128, np.uint8)
    x = one_batch(images, AugmentConfig(**NO_AUGMENT, noise_std=0.5))
    noise = x - 128 / 255
    assert abs(noise.mean().item()) < 0.01 and abs(noise.std().item() - 0.5) < 0.01
    assert x.min() < 0 and x.max() > 1


def test_set_epoch_replays_order_and_augmentation_exactly():
    images, labels = random_images(20), np.arange(20)
    cfg = AugmentConfig(noise_std=0.1)
    first = DeviceLoader(images, labels, 8, augment=cfg, seed=3)
    second = DeviceLoader(images, labels, 8, augment=cfg, seed=3)
    run = lambda loader: [(x.clone(), y.clone()) for x, y in loader]  # noqa: E731
    epoch0, epoch1 = run(first), run(first)  # each pass advances the epoch
    second.set_epoch(1)
    replay = run(second)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(epoch1, replay))
    assert not torch.equal(epoch0[0][1], epoch1[0][1])
    other_seed = DeviceLoader(images, labels, 8, augment=cfg, seed=4)
    other_seed.set_epoch(1)
    assert not torch.equal(run(other_seed)[0][0], replay[0][0])


def test_float_images_from_pca_pass_through_unchanged():
    images = np.random.default_rng(1).normal(0.5, 0.7, (6, 8, 8, 3)).astype(np.float32)
    x, _ = next(iter(DeviceLoader(images, np.zeros(6), 6, shuffle=False)))
    assert torch.equal(x, torch.from_numpy(images).permute(0, 3, 1, 2))
    flipped = one_batch(images, AugmentConfig(crop_padding=2, flip=True, cutout=4))
    assert flipped.dtype == torch.float32 and flipped.shape == (6, 3, 8, 8)


def test_augment_batch_works_on_its_own():
    x = torch.rand(5, 3, 8, 8)
    out = augment_batch(x, AugmentConfig(crop_padding=2, cutout=4), epoch_generator(0, 0))
    again = augment_batch(x, AugmentConfig(crop_padding=2, cutout=4), epoch_generator(0, 0))
    assert out.shape == x.shape and torch.equal(out, again)
    assert ((out == 0).flatten(1).sum(1) >= 48).all()  # the default fill is 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(images=np.zeros((4, 8, 8), np.uint8)), r"images must be \(N, H, W, C\)"),
        (dict(images=np.zeros((4, 8, 8, 3), np.int32)), "uint8 or float32"),
        (dict(labels=np.zeros(3)), "expected 4 labels"),
        (dict(batch_size=0), "batch_size must be at least 1"),
        (dict(augment=AugmentConfig(crop_padding=8)), "crop_padding=8 must be from 0 to 7"),
        (dict(augment=AugmentConfig(cutout=8)), "cutout=8 must be from 0 to 7"),
    ],
)
def test_bad_arguments_are_explained(kwargs, message):
    arguments = dict(images=np.zeros((4, 8, 8, 3), np.uint8), labels=np.zeros(4), batch_size=2) | kwargs
    with pytest.raises(ValueError, match=message):
        DeviceLoader(arguments.pop("images"), arguments.pop("labels"), arguments.pop("batch_size"), **arguments)
