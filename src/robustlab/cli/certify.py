"""`robustlab certify`: certified accuracy of a trained run, optionally checked by attacks."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from robustlab.cli.common import (
    Subparsers,
    add_data_dir_flag,
    add_device_flag,
    add_json_flag,
    emit,
    format_table,
    positive_int,
    radius,
)
from robustlab.errors import RobustlabError

if TYPE_CHECKING:
    from robustlab.config import ExperimentConfig


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "certify",
        help="certified robust accuracy of a trained run (and a soundness check by attacks)",
        description="Certifies every image of a split with the run's Lipschitz bound (float64, with a margin "
        "for rounding error) and writes RUN_DIR/certify.json (other settings: certify-<split>[-first<N>]"
        "[-eps<...>].json, one file per settings). --check-soundness attacks every certified image "
        "at its certified radius and exits with status 1 if any prediction flips.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder made by `robustlab train`")
    parser.add_argument(
        "--split", choices=("test", "val", "train"), help="images to certify (default: the run's evaluation split)"
    )
    parser.add_argument(
        "--eps",
        nargs="+",
        type=radius,
        metavar="EPS",
        help="radii in the [0,1] pixel scale, fractions allowed (default: the run's eval.eps, e.g. 36/255 72/255 108/255 1)",
    )
    parser.add_argument("--check-soundness", action="store_true", help="attack every certified image at its radius")
    parser.add_argument("--attack", default="pgd", help="attack for --check-soundness: pgd (built in) or autoattack")
    parser.add_argument("--attack-steps", type=positive_int, default=50, help="PGD steps (default 50)")
    parser.add_argument(
        "--attack-restarts", type=positive_int, default=1, help="PGD restarts; later ones start at random points"
    )
    parser.add_argument("--limit", type=positive_int, help="certify only the first LIMIT images")
    parser.add_argument(
        "--batch-size", type=positive_int, help="images per forward pass (default: the run's eval.batch_size)"
    )
    add_data_dir_flag(parser, ", if not the one the run recorded")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace a soundness-checked result of the same settings by an unchecked one",
    )
    add_device_flag(parser, "auto", "auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not for --help: keeps start-up fast
    from robustlab.certify.attacks import check_soundness, ensure_available
    from robustlab.certify.evaluate import certify_points, split_images, summarize_certificates
    from robustlab.runs.checkpoint import load_run_model
    from robustlab.runs.result_files import CERTIFY_FILE, CertifyReport
    from robustlab.runs.store import Run
    from robustlab.runtime import resolve_device

    if args.check_soundness:
        ensure_available(args.attack)
    device = resolve_device(args.device)
    model, config = load_run_model(args.run_dir, device)
    if args.data_dir:
        config.data.data_dir = args.data_dir
    images, labels, split, num_classes = split_images(config, args.split)
    limit = args.limit if args.limit is not None and args.limit < len(labels) else None
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    eps = args.eps or config.eval.eps
    run = Run(args.run_dir)
    name = result_name(split, limit, eps, config, CERTIFY_FILE)
    if not (args.check_soundness or args.force):
        _keep_checked_result(run.path / name)  # refused before the work, not after
    batch_size = args.batch_size or config.eval.batch_size
    start = time.perf_counter()
    certificates = certify_points(model, images, labels, batch_size, device, progress=not args.quiet)
    evaluation = summarize_certificates(certificates, eps, num_classes)
    evaluation.time_s = time.perf_counter() - start
    report = CertifyReport(args.run_dir, split, config.model.name, evaluation)
    if args.check_soundness:
        start = time.perf_counter()
        options = {"steps": args.attack_steps, "restarts": args.attack_restarts} if args.attack == "pgd" else {}
        report.soundness = check_soundness(
            model, images, certificates, args.attack, batch_size, device, progress=not args.quiet, **options
        )
        report.soundness["time_s"] = time.perf_counter() - start
    path = run.write_json(name, report.to_dict())
    emit(args, {**report.to_dict(), "file": str(path)}, _render)
    if report.soundness is not None and not report.soundness["sound"]:
        found = report.soundness["counterexamples"]
        print(
            f"robustlab certify: UNSOUND: {len(found)} certified image(s) were flipped inside their "
            f"certified radius (first: {found[0]}); the model's Lipschitz bound does not hold",
            file=sys.stderr,
        )
        return 1
    return 0


def result_name(split: str, limit: int | None, eps: list[float], config: ExperimentConfig, default: str) -> str:
    """One file per settings: ``default`` (certify.json) for the run's own (its evaluation split, every
    image, its eval.eps), else ``certify-<split>-first<N>-eps<...>.json`` with the parts that differ,
    so a quick ``--limit 200`` never replaces the full result."""
    default_split = "val" if config.data.val_size > 0 else "test"
    parts = [] if split == default_split else [split]
    if limit is not None:
        parts.append(f"first{limit}")
    if [round(e, 9) for e in eps] != [round(e, 9) for e in config.eval.eps]:
        parts.append("eps" + "_".join(f"{e:.4g}" for e in eps))
    if not parts:
        return default
    return "-".join([default.removesuffix(".json"), *parts]) + ".json"


def _keep_checked_result(path: Path) -> None:
    """Refuse to replace a soundness-checked result by an unchecked one of the same settings."""
    try:
        checked = "soundness" in json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or a damaged one: it is replaced
        return
    if checked:
        raise RobustlabError(
            f"{path} holds a soundness-checked result of these settings; add --check-soundness to replace it "
            "with a checked one, or --force to replace it with this unchecked one"
        )


def _render(data: dict) -> str:
    rows = [{"metric": "accuracy", "value": data["accuracy"]}]
    rows += [{"metric": f"CRA {entry['label']}", "value": entry["cra"]} for entry in data["cra"]]
    if data["lipschitz_constant"] is None:
        rows.append({"metric": "CRA", "value": "n/a (standard network: no Lipschitz bound)"})
    text = f"{data['model']} on {data['split']} ({data['n']} images), written to {data['file']}\n" + format_table(rows)
    sound = data.get("soundness")
    if sound:
        verdict = "sound" if sound["sound"] else f"UNSOUND: {len(sound['counterexamples'])} counterexample(s)"
        text += (
            f"\nsoundness ({sound['attack']}, {sound['checked']} certified images attacked at their radius): "
            f"{verdict}; largest margin drop / (sqrt2 * distance) = {sound['max_margin_drop_ratio']:.6f}"
        )
    return text
