"""`robustlab theory` (under construction in this change)."""


def add_parser(subparsers) -> None:
    subparsers.add_parser("theory", help="(not yet available)")
