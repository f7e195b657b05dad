"""The dataset protocol: a dataset defined here, in one ``DatasetSpec`` and one ``register``
call (what a module in ``robustlab/data/datasets/`` holds), gets ``data info``, loading, the
model shapes of ``verify``, training and certification, with no other change."""

import json

import numpy as np

from robustlab.cli import main
from robustlab.config import load_config
from robustlab.data.datasets import DATASETS, DatasetSpec, load_dataset, register
from robustlab.data.datasets.readers import Splits
from robustlab.train.loop import train

TOY = "test-stripes"


def stripes() -> Splits:
    """6x6 grayscale images of one bright row (class 0) or column (class 1), at a random place."""
    rng = np.random.default_rng(0)
    images = np.zeros((120, 6, 6, 1), np.uint8)
    labels = np.arange(120) % 2
    for image, label, place in zip(images, labels, rng.integers(0, 6, 120)):
        if label == 0:
            image[place, :, 0] = 255
        else:
            image[:, place, 0] = 255
    return images[:90], labels[:90], images[90:], labels[90:]


if TOY not in DATASETS:
    register(
        DatasetSpec(TOY, "rows or columns, 90/30, 6x6x1 (a test's toy)", ("row", "column"), (6, 6, 1), builtin=stripes)
    )


def test_a_registered_dataset_is_listed_and_loads_through_the_checks(capsys):
    assert main(["data", "info", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["datasets"]}
    assert rows[TOY]["status"] == "built in"
    data = load_dataset(TOY)
    assert data.input_shape == (1, 6, 6) and data.classes == ["row", "column"] and len(data.y_test) == 30


def test_verify_builds_a_model_for_the_dataset_by_its_name(capsys):
    assert main(["verify", "--model", "lipmlp-aol", "--dataset", TOY, "--json", "--quiet", "--attack-steps", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["input_shape"] == [1, 6, 6]


def test_a_run_trains_and_certifies_on_the_dataset(tmp_path):
    overrides = [f"data.name={TOY}", "data.val_size=0", "model.kwargs={width: 16, depth: 1}", "train.epochs=2"]
    overrides += ["augment.crop_padding=0", "train.device=cpu"]
    run = train(load_config("digits", overrides), run_dir=tmp_path / "run", progress=False)
    results = run.load_results()
    assert results.n_eval == 30 and 0 <= results.cra[0].cra <= results.accuracy <= 1
