"""Where a study lives, and how a database password stays out of sight.

``--storage`` is a path ending in ``.log`` (an Optuna journal file: no server; every
worker that can write the file joins the study) or a database URL with ``://``
(``sqlite:///F``, ``postgresql://``, ``mysql://``: Optuna's RDB storage). Both are
Optuna's own formats, readable with ``optuna.load_study`` and optuna-dashboard.

A password is taken, as database clients take it, from the URL, from
``EDGEAG_STORAGE_PASSWORD``, or from ``--storage-password-file``; with none of
them, PostgreSQL's client library still reads ``PGPASSWORD`` and ``PGPASSFILE``
itself. Whatever edgeag prints or writes shows the URL with the password masked
(`mask`), and every error message passes through `scrub`.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeag.errors import EdgeagError
from edgeag.train.children import SECRET_ENV

PASSWORD_ENV = SECRET_ENV[0]
"""Environment variable holding the database password (no training child inherits it)."""
SCHEMES = ("sqlite", "postgresql", "mysql")
STORAGE_SYNTAX = ("a journal file PATH.log, or a URL sqlite:///FILE.db, "
                  "postgresql://USER@HOST[:PORT]/DB, mysql://USER@HOST[:PORT]/DB")


@dataclass(frozen=True)
class Storage:
    """A resolved ``--storage``: ``kind`` ``journal`` (``path``) or ``rdb`` (``url``)."""

    kind: str
    display: str
    """What may be printed and written: the path, or the URL with ``***`` for its password."""
    path: Path | None = None
    url: str | None = field(default=None, repr=False)
    """The URL to connect with, password included."""
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def scrub(self, text: str) -> str:
        """``text`` with every secret of this storage replaced by ``***``."""
        return scrub(text, self.secrets)


def scrub(text: str, secrets) -> str:
    """``text`` with each of ``secrets`` (and the password part of any URL) masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
            from urllib.parse import quote
            text = text.replace(quote(secret, safe=""), "***")
    return _URL_PASSWORD.sub(r"\1***\3", text)


SCHEMA_RACE_ATTEMPTS = 5
_SCHEMA_RACE = re.compile(r"already exists|UNIQUE constraint|duplicate key", re.I)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@\s]*)(@)")


def mask(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return _URL_PASSWORD.sub(r"\1***\3", url)


def resolve_storage(text: str, password_file: str | None = None) -> Storage:
    """``--storage`` as a `Storage`, with the password joined to the URL; EdgeagError
    naming the (masked) value and the accepted forms."""
    if "://" not in text:
        if not text.endswith(".log"):
            raise EdgeagError(f"invalid --storage {text!r}: expected {STORAGE_SYNTAX}")
        if password_file:
            raise EdgeagError("--storage-password-file is for a database URL; "
                              f"{text!r} is a journal file")
        path = Path(text)
        if path.is_dir():
            raise EdgeagError(f"invalid --storage {text!r}: a directory (expected "
                              f"{STORAGE_SYNTAX})")
        return Storage("journal", str(path), path=path)

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    shown = mask(text)
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        raise EdgeagError(f"invalid --storage {shown!r}: not a URL (expected "
                          f"{STORAGE_SYNTAX})") from None
    scheme = url.get_backend_name()
    if scheme not in SCHEMES:
        raise EdgeagError(f"invalid --storage {shown!r}: unknown database {scheme!r} "
                          f"(accepted: {', '.join(SCHEMES)}; or {STORAGE_SYNTAX})")
    secrets = [url.password] if url.password else []
    password = None
    if password_file:
        try:
            password = Path(password_file).read_text().splitlines()[0].strip()
        except (OSError, IndexError, UnicodeDecodeError) as e:
            raise EdgeagError(f"invalid --storage-password-file {password_file!r}: "
                              f"{'empty' if isinstance(e, IndexError) else 'not readable'} "
                              "(expected a file whose first line is the password)") from None
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    if password is not None:
        if scheme == "sqlite":
            source = "--storage-password-file" if password_file else PASSWORD_ENV
            raise EdgeagError(f"a password ({source}) is for a database server; {shown!r} is a "
                              "SQLite file")
        if url.password:
            raise EdgeagError(f"--storage {shown!r} holds a password and one is also given "
                              f"({'--storage-password-file' if password_file else PASSWORD_ENV}): "
                              "give it once")
        url = url.set(password=password)
        secrets.append(password)
    if scheme == "sqlite":
        if not url.database:
            raise EdgeagError(f"invalid --storage {shown!r}: expected sqlite:///FILE.db")
        display = text
    else:
        if not url.host and not url.query.get("host"):
            raise EdgeagError(f"invalid --storage {shown!r}: no host (expected {STORAGE_SYNTAX})")
        display = mask(url.render_as_string(hide_password=True))
    url = _with_driver(url, shown)
    return Storage("rdb", display, url=url.render_as_string(hide_password=False),
                   secrets=tuple(secrets))


DRIVERS = {"postgresql": (("psycopg2", "psycopg2"), ("psycopg", "psycopg")),
           "mysql": (("pymysql", "pymysql"), ("mysqldb", "MySQLdb"))}
"""Per database, (SQLAlchemy driver name, module) in order of preference."""


def _with_driver(url, shown: str):
    """``url`` naming an installed driver when it names none (SQLAlchemy's default
    driver differs between its versions); EdgeagError when none is installed."""
    import importlib.util

    scheme = url.get_backend_name()
    if scheme not in DRIVERS or "+" in url.drivername:
        return url
    for driver, module in DRIVERS[scheme]:
        if importlib.util.find_spec(module) is not None:
            return url.set(drivername=f"{scheme}+{driver}")
    names = " or ".join(f"{m}" for _, m in DRIVERS[scheme])
    raise EdgeagError(f"--storage {shown!r} needs a {scheme} driver ({names}): "
                      + ("pip install 'edgeag[tune]'" if scheme == "postgresql"
                         else "pip install pymysql"))


HEARTBEAT_SECONDS = 60
"""Default ``--heartbeat``: how often a worker on a database storage records that its
running trial is alive."""


def open_storage(storage: Storage, heartbeat: int | None = None):
    """The Optuna storage object; EdgeagError (secrets masked) when it cannot be opened
    (an unreachable server, a refused login, a missing driver). A database storage
    with ``heartbeat`` (seconds) has Optuna's heartbeat: a running trial that has not
    beaten for twice that long (its worker was killed, its machine lost) is marked FAIL
    by the next worker that starts a trial. Optuna's journal storage has no heartbeat."""
    import warnings

    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    # the heartbeat is marked experimental (since Optuna 2.9); the warning is noise here
    warnings.filterwarnings("ignore", category=ExperimentalWarning)

    if storage.kind == "journal":
        try:
            storage.path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(storage.path)))
        except OSError as e:
            raise EdgeagError(f"cannot open --storage {storage.display!r}: "
                              f"{e.strerror or e}") from None
    kwargs = {"connect_args": {"timeout": 60}} if storage.url.startswith("sqlite") else \
        {"pool_pre_ping": True}
    if storage.url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        for attempt in range(SCHEMA_RACE_ATTEMPTS):
            try:
                return RDBStorage(storage.url, engine_kwargs=kwargs,
                                  **({"heartbeat_interval": heartbeat,
                                      "grace_period": 2 * heartbeat} if heartbeat else {}))
            except Exception as e:
                # workers that start at once on a new database all create its tables; the
                # losers see them half made: open again once the winner has finished
                if attempt + 1 == SCHEMA_RACE_ATTEMPTS or not _SCHEMA_RACE.search(str(e)):
                    raise
                time.sleep(0.5 + attempt)
    except ModuleNotFoundError as e:
        raise EdgeagError(f"--storage {storage.display!r} needs the {e.name} package "
                          "(pip install 'edgeag[tune]' installs the PostgreSQL driver; "
                          "MySQL needs pymysql or mysqlclient)") from None
    except Exception as e:  # sqlalchemy's OperationalError and friends, optuna's own
        reason = " ".join(str(getattr(e, "orig", None) or e).split())
        reason = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", reason)
        raise EdgeagError(f"cannot open --storage {storage.display!r}: "
                          f"{storage.scrub(reason)[:300]}") from None
