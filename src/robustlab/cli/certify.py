"""`robustlab certify` (under construction in this change)."""


def add_parser(subparsers) -> None:
    subparsers.add_parser("certify", help="(not yet available)")
