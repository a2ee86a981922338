"""The one exception type users see; the CLI turns it into a clean message and exit code."""

from hydra.errors import CompactHydraException


class RLRunError(CompactHydraException):
    """A problem the user can fix (bad config value, unknown environment, missing extra).

    The message is shown as-is, without a traceback, so it must say what is wrong and what to
    do about it in one paragraph. (Hydra too prints a CompactHydraException without a
    traceback when it ends a job of a sweep.)
    """

    exit_code = 2
