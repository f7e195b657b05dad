"""The base of errors a user can fix; the command line prints them as one line."""


class RobustlabError(Exception):
    """Something about the user's input or run went wrong in a way the message explains."""
