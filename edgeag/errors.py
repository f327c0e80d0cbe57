"""The user-facing error family. The CLI prints one line for these and exits with
``exit_code``; anything else is a bug (exit 1 with a traceback)."""


class EdgeagError(Exception):
    """A user error: bad flag, budget, profile, env or file (exit 2)."""

    exit_code = 2

