"""Small pieces shared by the subcommands: --json output and common options."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from robustlab.config import MAX_EPS, ConfigError, check_device_name, parse_float
from robustlab.progress import decimals_needed

if TYPE_CHECKING:
    from robustlab.cli import CommandParser

# What each command module's ``add_parser`` adds its subcommand to (``build_parser``'s subparsers)
Subparsers: TypeAlias = "argparse._SubParsersAction[CommandParser]"


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def add_overrides_flag(parser: argparse.ArgumentParser, scope: str = "every run") -> None:
    """``--set KEY=VALUE`` (repeatable), collected in ``args.overrides``."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"config override for {scope}, e.g. --set optim.lr=0.3 (repeatable)",
    )


def add_data_dir_flag(parser: argparse.ArgumentParser, what: str = "") -> None:
    """``--data-dir DIR``: the folder of dataset files, for every command that reads data."""
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"folder holding the datasets (<name>.npz or the official files in <name>/){what}; "
        "default: $ROBUSTLAB_DATA, else ~/.robustlab/data",
    )


def data_dir_override(args: argparse.Namespace) -> list[str]:
    """``--data-dir`` as the config override ``data.data_dir`` (none when not given). The
    folder is not part of a run's identity, so the same runs are found from any folder."""
    folder = getattr(args, "data_dir", None)
    return [f"data.data_dir={json.dumps(folder)}"] if folder else []  # JSON quoting: YAML reads it verbatim


def add_device_flag(parser: argparse.ArgumentParser, default: str | None, help: str) -> None:
    """``--device``, checked when the arguments are parsed: a bad name is a usage error of the
    command, before anything is loaded or trained."""
    parser.add_argument("--device", type=device_name, default=default, help=help)


def device_name(text: str) -> str:
    """An argparse type: auto, cpu, cuda, cuda:1, mps (``config.check_device_name``)."""
    try:
        return check_device_name(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("device: ")) from None


def emit(args: argparse.Namespace, data: Any, render: Callable[[Any], str]) -> None:
    """Print ``data`` as JSON with --json, else as the human-readable ``render(data)``."""
    if getattr(args, "json", False):
        from robustlab.files import json_default  # imports torch: only when printing JSON

        json.dump(data, sys.stdout, indent=2, default=json_default)
        sys.stdout.write("\n")
    else:
        print(render(data))


def format_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A plain fixed-width text table."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    decimals = [decimals_needed([row.get(c) for row in rows], 4) for c in columns]  # 20 epochs, not 20.0000
    cells = [[_cell(row.get(c), d) for c, d in zip(columns, decimals)] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    # numbers line up on the right, words on the left
    numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in rows) for c in columns]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _cell(value: Any, decimals: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    return "" if value is None else str(value)


def non_negative_number(text: str) -> float:
    """An argparse type: 0.125, 1/8 or 36/255 (radii and noise levels are fractions in the paper)."""
    try:
        value = parse_float(text, "value")
    except ConfigError:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.125, 1/8 or 36/255, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got '{text}'")
    return value


def radius(text: str) -> float:
    """An argparse type: a radius in the [0, 1] pixel scale such as 36/255 (36 alone is refused)."""
    value = non_negative_number(text)
    if value > MAX_EPS:
        raise argparse.ArgumentTypeError(
            f"radius '{text}' is above {MAX_EPS:g}; radii are in the [0, 1] pixel scale: write {text}/255 "
            f"for {text} in 0-255 units"
        )
    return value


def positive_int(text: str) -> int:
    """An argparse type: a count such as a batch size or a number of images (1 or more)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def int_list(text: str) -> list[int]:
    """An argparse type: comma-separated non-negative integers such as 48,97,195."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 48,97,195, got '{text}'")
    return values
