"""`robustlab verify` (under construction in this change)."""


def add_parser(subparsers) -> None:
    subparsers.add_parser("verify", help="(not yet available)")
