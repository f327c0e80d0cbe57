"""The user-facing error family. The CLI prints one line for these and exits with
``exit_code``; anything else is a bug (exit 1 with a traceback)."""


class EdgeagError(Exception):
    """A user error: bad flag, budget, profile, env or file (exit 2)."""

    exit_code = 2



class WriteFailed(EdgeagError):
    """A file could not be written: the disk is full, a file-size limit was reached, or
    the device failed (exit 5). Nothing is left half-written: every file goes to a
    temporary name first, so the previous checkpoint or export stays as it was."""

    exit_code = 5


WRITE_ERRNOS = frozenset({28, 27, 122, 5, 30})
"""ENOSPC, EFBIG, EDQUOT, EIO, EROFS: OSErrors that mean the file system refused a
write, as opposed to a bug."""


def describe_write_error(e: OSError) -> str:
    return f"[Errno {e.errno}] {e.strerror or type(e).__name__}"
