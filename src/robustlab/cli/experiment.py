"""`robustlab experiment` (under construction in this change)."""


def add_parser(subparsers) -> None:
    subparsers.add_parser("experiment", help="(not yet available)")
