"""The one exception type users see; the CLI turns it into a clean message and exit code."""


class RLRunError(Exception):
    """A problem the user can fix (bad config value, unknown environment, missing extra).

    The message is shown as-is, without a traceback, so it must say what is wrong and what to
    do about it in one paragraph.
    """

    exit_code = 2
