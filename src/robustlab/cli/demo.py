"""`robustlab demo` (under construction in this change)."""


def add_parser(subparsers) -> None:
    subparsers.add_parser("demo", help="(not yet available)")
