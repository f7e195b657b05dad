"""`robustlab data` (under construction in this change)."""


def add_parser(subparsers) -> None:
    subparsers.add_parser("data", help="(not yet available)")
