"""The base of errors a user can fix; the command line prints them as one line."""


class RobustlabError(Exception):
    """Something about the user's input or run went wrong in a way the message explains."""


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``: how a failed run or sweep point records its error."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
