"""One exception type for user-caused errors: the CLI prints its message as one line, no traceback."""


class EdgeAdError(Exception):
    """A problem the user can fix (bad path, bad config, corrupt file, unreachable device)."""
