"""The error type for problems a user can fix: the CLI prints its message as one line, no traceback."""


class EdgeAdError(Exception):
    """A problem the user can fix (bad path, bad config, corrupt file, unreachable device)."""


class ConfigError(EdgeAdError):
    """A configuration file or value is invalid; the message names the key (and the file)."""


class NonFiniteOutput(EdgeAdError):
    """A map or score that is NaN or infinite: `score >= threshold` would pass it, so the frame is an error."""
