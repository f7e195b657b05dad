"""`robustlab report` (under construction in this change)."""


def add_parser(subparsers) -> None:
    subparsers.add_parser("report", help="(not yet available)")
