"""`robustlab data`: list, inspect and prepare datasets.

Like every command module, it imports numpy, torch and the data code inside the functions that
need them, so that `robustlab --help` does not load them (seconds).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from robustlab.cli.common import Subparsers, add_data_dir_flag, add_json_flag, emit, format_table

if TYPE_CHECKING:
    from robustlab.data.datasets.base import ImageDataset


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("data", help="list, inspect and prepare datasets")
    parser.set_defaults(func=lambda args: parser.print_help())
    actions = parser.add_subparsers(dest="action", metavar="ACTION")

    info = actions.add_parser("info", help="sizes, shapes, classes and channel means of a dataset, or a table of all")
    info.add_argument("name", nargs="?", help="a dataset name or an .npz path; omit it for a table of all datasets")
    _add_common(info)
    info.set_defaults(func=run_info)

    prepare = actions.add_parser("prepare", help="download or import a dataset into the data folder and verify it")
    prepare.add_argument("name", help="a dataset name (see `robustlab data info`)")
    prepare.add_argument("--download", action="store_true", help="fetch missing official files (md5-verified)")
    prepare.add_argument(
        "--from",
        dest="source",
        metavar="FILE_OR_DIR",
        help="import from an .npz (x_train, y_train, x_test, y_test), an official file, or a folder of them",
    )
    _add_common(prepare)
    prepare.set_defaults(func=run_prepare)


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_data_dir_flag(parser)
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="accept files in the official format whose md5 differs from the official one",
    )
    add_json_flag(parser)


def run_info(args: argparse.Namespace) -> int:
    from robustlab.data.datasets import load_dataset

    if args.name is None:
        emit(args, dataset_table(args.data_dir), _render_table)
    else:
        emit(args, describe(load_dataset(args.name, args.data_dir, verify=args.verify)), _render_description)
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from robustlab.data.datasets import import_files, load_dataset

    written = []
    if args.source:
        written = [str(p) for p in import_files(args.name, args.source, args.data_dir, args.verify)]
    dataset = load_dataset(args.name, args.data_dir, download=args.download, verify=args.verify)
    emit(args, {**describe(dataset), "written": written}, _render_description)
    return 0


def dataset_table(data_dir: str | None = None) -> dict:
    """Every known dataset and whether its files are in ``data_dir``."""
    from robustlab.data.datasets import DATASETS, default_data_dir

    folder = default_data_dir(data_dir)
    rows = []
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        status = spec.status(folder)
        path = {"npz": spec.npz_path(folder), "official": spec.folder(folder)}.get(status)
        location = None if path is None else str(path)
        rows.append({"name": name, "status": status, "location": location, "description": spec.description})
    return {"data_dir": str(folder), "datasets": rows}


def describe(dataset: ImageDataset) -> dict:
    """Sizes, shape, classes and channel means of an ``ImageDataset``."""
    import numpy as np

    from robustlab.data.splits import channel_means

    return {
        "name": dataset.name,
        "source": dataset.source,
        "train_size": len(dataset.y_train),
        "test_size": len(dataset.y_test),
        "input_shape": list(dataset.input_shape),
        "num_classes": dataset.num_classes,
        "classes": dataset.classes,
        "channel_means": [round(float(m), 4) for m in channel_means(dataset.x_train)],
        "train_class_counts": np.bincount(dataset.y_train, minlength=dataset.num_classes).tolist(),
    }


def _render_table(data: dict) -> str:
    table = format_table(data["datasets"], ["name", "status", "description", "location"])
    return f"data folder: {data['data_dir']}\n{table}"


def _render_description(info: dict) -> str:
    classes = ", ".join(info["classes"][:10]) + (", ..." if info["num_classes"] > 10 else "")
    counts = info["train_class_counts"]
    lines = [
        f"{info['name']}  ({info['source']})",
        f"  train / test   {info['train_size']:,} / {info['test_size']:,}",
        f"  image (C,H,W)  {tuple(info['input_shape'])}",
        f"  classes        {info['num_classes']}: {classes}",
        f"  per class      {min(counts):,} to {max(counts):,} training images",
        f"  channel means  {', '.join(f'{m:.4f}' for m in info['channel_means'])}",
    ]
    lines += [f"  wrote          {path}" for path in info.get("written", [])]
    return "\n".join(lines)
