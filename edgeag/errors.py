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


TORCH_INSTALL = "pip install 'edgeag[torch]'"
"""What installs torch for edgeag: the extra pins the CPU release that edgeag is tested
with (a bare ``pip install torch`` may resolve to a multi-GB CUDA build)."""


def torch_available() -> bool:
    """Whether ``import torch`` can find torch here, without importing it (False also when
    ``sys.modules['torch']`` is None, i.e. torch is blocked)."""
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a torch module without __spec__ is importable
        return True


def require_torch(message: str) -> None:
    """Raise `EdgeagError` (exit 2) with ``message``, one line naming what needs torch
    and what to install, when torch is not installed here."""
    if not torch_available():
        raise EdgeagError(message)
