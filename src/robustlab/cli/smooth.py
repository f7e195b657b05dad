"""`robustlab smooth` (under construction in this change)."""


def add_parser(subparsers) -> None:
    subparsers.add_parser("smooth", help="(not yet available)")
