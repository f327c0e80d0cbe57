"""Budget parsing, device profile validation, and the `edgeag profiles` command."""

import subprocess
import sys

import pytest

from edgeag.errors import EdgeagError
from edgeag.profiles import load_profile, parse_size, profile_names, resolve_budget

GOOD = [("256MB", 256 * 2**20), ("256M", 256 * 2**20), ("256MiB", 256 * 2**20),
        ("256mb", 256 * 2**20), ("0.5GB", 2**29), ("1GiB", 2**30), ("1g", 2**30),
        ("268435456", 268435456), ("512KiB", 512 * 1024), (" 2 GiB ", 2**31)]
BAD = ["256XB", "-1MB", "0", "nan", "", "1e400GB", "1.5", "inf", "0.0GB", "MB", "12 34"]


@pytest.mark.parametrize("text,nbytes", GOOD)
def test_parse_size_good(text, nbytes):
    assert parse_size(text) == nbytes


@pytest.mark.parametrize("text", BAD)
def test_parse_size_bad_names_value_and_accepted_forms(text):
    with pytest.raises(EdgeagError, match=r"invalid budget .*expected a positive size") as e:
        parse_size(text)
    assert repr(text) in str(e.value)


def test_shipped_profiles_load():
    names = profile_names()
    for required in ("rpi-zero-2w", "rpi3b", "rpi4", "rpi5", "jetson-orin-nano",
                     "android-midrange", "iphone"):
        assert required in names
    for name in names:
        prof = load_profile(name)
        assert prof.name == name
        assert 0 < prof.default_budget_bytes <= prof.ram_bytes


def test_budget_defaults_to_profile_and_is_capped_by_ram():
    prof = load_profile("rpi-zero-2w")
    assert resolve_budget(prof, None) == prof.default_budget_bytes
    assert resolve_budget(prof, "256MB") == 256 * 2**20
    with pytest.raises(EdgeagError, match=r"invalid budget '1GB'.*more than rpi-zero-2w's RAM"):
        resolve_budget(prof, "1GB")


VALID = """name = "board"
description = "a board"
arch = "aarch64"
cores = 4
ram = "2GiB"
default_budget = "512MiB"
threads = 2
export_formats = ["onnx"]
notes = ""
"""

BAD_PROFILES = [
    (VALID + 'colour = "red"\n', r"unknown key 'colour'"),
    (VALID.replace('cores = 4\n', ''), r"missing key 'cores'"),
    (VALID.replace('cores = 4', 'cores = "4"'), r"invalid cores '4': expected a positive integer"),
    (VALID.replace('cores = 4', 'cores = 0'), r"invalid cores 0"),
    (VALID.replace('threads = 2', 'threads = -2'), r"invalid threads -2"),
    (VALID.replace('ram = "2GiB"', 'ram = "-2GiB"'), r"invalid ram '-2GiB'"),
    (VALID.replace('ram = "2GiB"', 'ram = "0"'), r"invalid ram '0'"),
    (VALID.replace('ram = "2GiB"', 'ram = 2048'), r"invalid ram 2048"),
    (VALID.replace('"512MiB"', '"4GiB"'), r"invalid default_budget '4GiB': expected a size no larger"),
    (VALID.replace('["onnx"]', '["tflite"]'), r"invalid export_formats \['tflite'\]"),
    (VALID.replace('"aarch64"', '"mips"'), r"invalid arch 'mips'"),
    ("name = ", r"not valid TOML"),
]


@pytest.mark.parametrize("text,message", BAD_PROFILES)
def test_bad_profile_names_file_key_value(tmp_path, text, message):
    path = tmp_path / "board.toml"
    path.write_text(text)
    with pytest.raises(EdgeagError, match=message) as e:
        load_profile(str(path))
    assert str(path) in str(e.value)


def test_user_profile_by_path(tmp_path):
    path = tmp_path / "board.toml"
    path.write_text(VALID)
    assert load_profile(str(path)).ram_bytes == 2 * 2**30


def edgeag(*args):
    return subprocess.run([sys.executable, "-m", "edgeag.cli", *args], capture_output=True,
                          text=True)


def test_cli_profiles_table_and_one_profile():
    out = edgeag("profiles")
    assert out.returncode == 0
    lines = out.stdout.strip().splitlines()
    assert len(lines) >= 8 and "1,073,741,824" in out.stdout  # rpi4's budget in bytes
    one = edgeag("profiles", "rpi4")
    assert one.returncode == 0 and "4,294,967,296 bytes" in one.stdout


@pytest.mark.parametrize("args,fragment", [(["profiles", "nope"], "unknown profile 'nope'"),
                                           (["profiles", "/no/such.toml"], "cannot read profile"),
                                           (["frobnicate"], "invalid choice: 'frobnicate'")])
def test_cli_bad_input_exits_2_with_one_line(args, fragment):
    out = edgeag(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and fragment in out.stderr
    assert "Traceback" not in out.stderr
