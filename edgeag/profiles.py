"""Device profiles (TOML data files) and memory sizes ("256MB", "1GiB").

Sizes are read the way ``docker --memory``, systemd's ``MemoryMax=`` and cgroup
``memory.max`` read them: ``K``/``KB``/``KiB`` = 2^10 bytes, ``M``/``MB``/``MiB`` = 2^20,
``G``/``GB``/``GiB`` = 2^30, ``T``/``TB``/``TiB`` = 2^40, case-insensitive; a bare
integer is bytes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edgeag.errors import EdgeagError
from edgeag.export.formats import FORMATS
from edgeag.io import tomllib

_UNITS = {"": 0, "k": 10, "kb": 10, "kib": 10, "m": 20, "mb": 20, "mib": 20,
          "g": 30, "gb": 30, "gib": 30, "t": 40, "tb": 40, "tib": 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")
ACCEPTED_SIZES = "a positive size such as 268435456 (bytes), 256M, 256MB, 256MiB, 0.5GB or 1GiB"
EXPORT_FORMATS = tuple(FORMATS)
"""What a profile's ``export_formats`` may list: the export formats' registry."""


def parse_size(text: str, what: str = "budget") -> int:
    """Bytes in ``text``; raises EdgeagError naming the value and the accepted forms."""
    match = _SIZE.match(text) if isinstance(text, str) else None
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS or (unit == "" and "." in match.group(1)):
        raise EdgeagError(f"invalid {what} {text!r}: expected {ACCEPTED_SIZES}")
    value = float(match.group(1)) * 2 ** _UNITS[unit]
    if not math.isfinite(value) or value < 1 or value >= 2**63:
        raise EdgeagError(f"invalid {what} {text!r}: expected {ACCEPTED_SIZES}")
    return int(value)


def format_size(nbytes: int) -> str:
    """``268435456`` -> ``'256.0 MiB (268,435,456 bytes)'``: the unit with the byte figure."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 2**shift:
            return f"{nbytes / 2**shift:.1f} {unit} ({nbytes:,} bytes)"
    return f"{nbytes:,} bytes"


@dataclass(frozen=True)
class DeviceProfile:
    """One device: what edgeag plans a training run against."""

    name: str
    description: str
    arch: str
    cores: int
    ram_bytes: int
    default_budget_bytes: int
    """What a training process may take while the OS and other apps run."""
    threads: int
    export_formats: tuple[str, ...]
    notes: str
    source: str
    """The file the profile was read from."""


# TOML key -> (type check, accepted-values text)
_SCHEMA = {
    "name": (str, "a string"),
    "description": (str, "a string"),
    "arch": (str, "one of aarch64, armv7l, x86_64, arm64"),
    "cores": (int, "a positive integer"),
    "ram": (str, ACCEPTED_SIZES),
    "default_budget": (str, ACCEPTED_SIZES),
    "threads": (int, "a positive integer"),
    "export_formats": (list, f"a non-empty list drawn from {', '.join(EXPORT_FORMATS)}"),
    "notes": (str, "a string"),
}
_ARCHES = ("aarch64", "armv7l", "x86_64", "arm64")


def _bad(path: str, key: str, value, accepted: str) -> EdgeagError:
    return EdgeagError(f"{path}: invalid {key} {value!r}: expected {accepted}")


def parse_profile(data: dict, path: str) -> DeviceProfile:
    """Validate a profile's TOML table; every error names the file, key, value and what
    is accepted."""
    for key in data:
        if key not in _SCHEMA:
            raise EdgeagError(f"{path}: unknown key {key!r}: accepted keys are "
                              f"{', '.join(_SCHEMA)}")
    for key, (kind, accepted) in _SCHEMA.items():
        if key not in data:
            raise EdgeagError(f"{path}: missing key {key!r} ({accepted})")
        value = data[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _bad(path, key, value, accepted)
        if kind is int and value <= 0:
            raise _bad(path, key, value, accepted)
    if data["arch"] not in _ARCHES:
        raise _bad(path, "arch", data["arch"], _SCHEMA["arch"][1])
    formats = data["export_formats"]
    if not formats or any(f not in EXPORT_FORMATS for f in formats):
        raise _bad(path, "export_formats", formats, _SCHEMA["export_formats"][1])
    sizes = {}
    for key in ("ram", "default_budget"):
        try:
            sizes[key] = parse_size(data[key], key)
        except EdgeagError:
            raise _bad(path, key, data[key], ACCEPTED_SIZES) from None
    if sizes["default_budget"] > sizes["ram"]:
        raise _bad(path, "default_budget", data["default_budget"],
                   f"a size no larger than ram ({data['ram']})")
    return DeviceProfile(name=data["name"], description=data["description"], arch=data["arch"],
                         cores=data["cores"], ram_bytes=sizes["ram"],
                         default_budget_bytes=sizes["default_budget"], threads=data["threads"],
                         export_formats=tuple(formats), notes=data["notes"], source=path)


def _builtin_dir():
    try:
        return resources.files("edgeag.device_profiles")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "device_profiles"


def profile_names() -> list[str]:
    """Names of the profiles shipped with edgeag."""
    return sorted(p.name[:-5] for p in _builtin_dir().iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str) -> DeviceProfile:
    """A shipped profile by name (``rpi4``) or a user's TOML file by path."""
    looks_like_path = name_or_path.endswith(".toml") or "/" in name_or_path
    if looks_like_path:
        path = Path(name_or_path)
        try:
            text = path.read_text()
        except OSError as e:
            raise EdgeagError(f"cannot read profile file {name_or_path!r}: {e.strerror}") from None
        source = str(path)
    else:
        entry = _builtin_dir() / f"{name_or_path}.toml"
        if not entry.is_file():
            raise EdgeagError(f"unknown profile {name_or_path!r}: accepted are "
                              f"{', '.join(profile_names())} or a path to a .toml file")
        text = entry.read_text()
        source = f"{name_or_path}.toml"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise EdgeagError(f"{source}: not valid TOML: {e}") from None
    return parse_profile(data, source)


def resolve_budget(profile: DeviceProfile, budget: str | None) -> int:
    """The run's budget in bytes: ``budget`` if given (never above the profile's RAM),
    otherwise the profile's default budget."""
    if budget is None:
        return profile.default_budget_bytes
    nbytes = parse_size(budget)
    if nbytes > profile.ram_bytes:
        raise EdgeagError(f"invalid budget {budget!r}: {format_size(nbytes)} is more than "
                          f"{profile.name}'s RAM, {format_size(profile.ram_bytes)}")
    return nbytes

