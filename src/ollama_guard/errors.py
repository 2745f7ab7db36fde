"""Errors that end a command with exit code 2 and a one-line message (never a traceback)."""


class GuardError(Exception):
    """Bad input, bad configuration or a failure to run. The message is shown to the user as is."""


class InputError(GuardError):
    """The user gave something we cannot use (a file, a flag value, a target)."""
