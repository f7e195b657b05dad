"""`robustlab train` (under construction in this change)."""


def add_parser(subparsers) -> None:
    subparsers.add_parser("train", help="(not yet available)")
