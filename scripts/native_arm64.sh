#!/usr/bin/env bash
# scripts/native_arm64.sh ROOTFS: the native ExecuTorch runner (native/pte_runner) on an
# emulated Raspberry Pi. From the repository's root, as root:
#
#   scripts/native_arm64.sh /var/tmp/arm64/rootfs
#
# 1. Cross-compiles native/pte_runner for aarch64 (g++-aarch64-linux-gnu, CMake >= 3.28)
#    against the C++ SDK inside the aarch64 executorch wheel, the same version as the
#    venv's, and installs it in ROOTFS as /opt/pte_runner/{bin/pte_runner,lib/*.so}: the
#    runner's RUNPATH has $ORIGIN/../lib, so it finds the wheel's libraries there.
# 2. Trains and exports two small policies (CartPole PPO, Pendulum TD3; fp32 and int8
#    .pte), unless they are already there, and writes the runs' training observations
#    as the runner's input (.npy float32 [n, obs_dim], as edgeag.export.native.run_batch).
# 3. Runs every .pte on the aarch64 runner under qemu-user (cortex-a72 = Pi 4,
#    cortex-a76 = Pi 5) and on the x86-64 runner (native/build, `make native`), at batch
#    1 and at PTE_MAX_BATCH, and checks the actions against the numpy reference under
#    edgeag.export.verify's tolerances, and aarch64 against x86-64.
# 4. Records the guest's peak RSS (../shared/tools/arm64/run.sh, qemu's own memory left
#    out) and the x86-64 runner's own (its VmHWM).
#
# Everything goes to $WORK (default /var/tmp/arm64), outside the repository: the SDK, the
# build, the runs, and native-arm64/ with the actions, the logs and summary.json. Exits 1
# if any run fails or misses its tolerance. Environment:
#   WORK=DIR          where to build and write (default /var/tmp/arm64)
#   WHEEL_DIR=DIR     where the aarch64 wheel is or is downloaded to (default $WORK/wheels)
#   ARM64_TOOLS=DIR   make-rootfs.sh and run.sh (default ../shared/tools/arm64)
# No timings are taken from the runs: emulated latency says nothing about a Pi.
set -euo pipefail

ROOTFS=$(realpath -m "${1:?usage: scripts/native_arm64.sh ROOTFS}")
[ -f native/pte_runner/CMakeLists.txt ] || { echo "run from edgeag's repository root" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root (apt-get, chroot, mount)" >&2; exit 2; }
[ "$ROOTFS" != / ] || { echo "ROOTFS is the rootfs to build or use, not /" >&2; exit 2; }
REPO=$PWD
PY=$REPO/.venv/bin/python
EDGEAG=$REPO/.venv/bin/edgeag
WORK=$(realpath -m "${WORK:-/var/tmp/arm64}")
WHEEL_DIR=$(realpath -m "${WHEEL_DIR:-$WORK/wheels}")
ARM64_TOOLS=$(realpath "${ARM64_TOOLS:-$REPO/../shared/tools/arm64}")
OUT=$WORK/native-arm64                  # actions, logs, summary.json
GUEST=/opt/pte_runner                   # the runner and its libraries inside ROOTFS
rm -rf "$OUT"                           # no actions left from an earlier run
mkdir -p "$OUT"/{data,actions,logs}

# --- 0. Host tools and the rootfs ------------------------------------------------------
# The cross compiler (Debian's, gcc 12 against glibc 2.36: bookworm's own, as in ROOTFS).
if ! command -v aarch64-linux-gnu-g++ >/dev/null; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++-aarch64-linux-gnu
fi
# Debian bookworm arm64 with qemu-user through binfmt (idempotent; ~2 min the first time).
"$ARM64_TOOLS/make-rootfs.sh" "$ROOTFS"

# --- 1. The aarch64 runner -------------------------------------------------------------
# The SDK of the same executorch release as the venv's exporter (1.5.1+cpu -> 1.5.1).
ET_VERSION=$("$PY" -c 'import importlib.metadata as m; print(m.version("executorch").split("+")[0])')
WHEEL=$WHEEL_DIR/executorch-$ET_VERSION-cp311-cp311-manylinux_2_28_aarch64.whl
if [ ! -f "$WHEEL" ]; then
  # cp311: the rootfs's Python; the C++ SDK inside does not depend on it.
  "$PY" -m pip download --no-deps --platform manylinux_2_28_aarch64 --only-binary=:all: \
    --python-version 3.11 "executorch==$ET_VERSION" -d "$WHEEL_DIR"
fi
SDK=$WORK/executorch-$ET_VERSION-aarch64/executorch   # lib/*.so, include/, lib/cmake/executorch/
if [ ! -f "$SDK/lib/cmake/executorch/executorch-config.cmake" ]; then
  rm -rf "$(dirname "$SDK")"
  "$PY" -m zipfile -e "$WHEEL" "$(dirname "$SDK")"
fi

BUILD=$WORK/pte_runner-build
mkdir -p "$BUILD"
cat > "$BUILD/aarch64-toolchain.cmake" <<'EOF'
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
EOF
# The CMake that `make native` uses (>= 3.28: older ones get no imported targets).
CMAKE=$("$PY" -c 'from edgeag.export.native import find_cmake; print(find_cmake())')
# As edgeag.export.native.build configures it, with the cross toolchain and the aarch64 SDK.
"$CMAKE" -S native/pte_runner -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$BUILD/aarch64-toolchain.cmake" \
  -DCMAKE_PREFIX_PATH="$SDK" -Dexecutorch_DIR="$SDK/lib/cmake/executorch" > "$OUT/logs/cmake.log" 2>&1 \
  || { tail -20 "$OUT/logs/cmake.log" >&2; exit 1; }
"$CMAKE" --build "$BUILD" --parallel "$(nproc)" >> "$OUT/logs/cmake.log" 2>&1 \
  || { tail -20 "$OUT/logs/cmake.log" >&2; exit 1; }
aarch64-linux-gnu-readelf -h "$BUILD/pte_runner" | grep -q 'Machine:.*AArch64' || { echo "$BUILD/pte_runner is not aarch64" >&2; exit 1; }
# The package config writes RUNPATH $ORIGIN:$ORIGIN/../lib:<host SDK>/lib; only the
# second resolves in the guest, given the layout below.
aarch64-linux-gnu-readelf -d "$BUILD/pte_runner" | grep RUNPATH | grep -qF '$ORIGIN/../lib' \
  || { echo "the runner's RUNPATH lacks \$ORIGIN/../lib" >&2; exit 1; }
rm -rf "$ROOTFS$GUEST"
mkdir -p "$ROOTFS$GUEST"/{bin,lib,work,out}
cp "$BUILD/pte_runner" "$ROOTFS$GUEST/bin/"
cp "$SDK"/lib/*.so "$ROOTFS$GUEST/lib/"

# --- 2. Policies and observations ------------------------------------------------------
# make_policy NAME TRAIN-ARGS...: train into $WORK/runs/NAME and export fp32 and int8 .pte
# (export verifies them itself, on x86-64 and with the native runner where it is built).
make_policy() {
  local name=$1 run=$WORK/runs/$1; shift
  if [ ! -f "$run/export/policy.int8.pte" ]; then
    rm -rf "$run"
    (cd "$WORK" && "$EDGEAG" train "$@" --out "$run" --no-progress) > "$OUT/logs/train-$name.log" 2>&1 \
      || { tail -20 "$OUT/logs/train-$name.log" >&2; exit 1; }
    (cd "$WORK" && "$EDGEAG" export "$run" --format pte --quantize int8 --no-progress) \
      > "$OUT/logs/export-$name.log" 2>&1 || { tail -20 "$OUT/logs/export-$name.log" >&2; exit 1; }
  fi
  mkdir -p "$ROOTFS$GUEST/work/$name"
  cp "$run"/export/policy.pte "$run"/export/policy.int8.pte "$ROOTFS$GUEST/work/$name/"
}
make_policy cartpole --total-steps 4096
make_policy pendulum --env Pendulum-v1 --algo td3 --total-steps 1500 \
  --set learning_starts=500 --set 'hidden=[64,64]'

# The runs' samples of their training observations (up to 1024, what export verifies on).
"$PY" - "$WORK/runs" "$OUT/data" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from edgeag.export.policy import load_run
runs, data = map(Path, sys.argv[1:])
for name in ("cartpole", "pendulum"):
    obs = load_run(runs / name).observations[0]
    np.save(data / f"{name}.obs.npy", np.ascontiguousarray(obs, np.float32))
EOF
for name in cartpole pendulum; do cp "$OUT/data/$name.obs.npy" "$ROOTFS$GUEST/work/$name/obs.npy"; done

# --- 3 and 4. Run the runners ----------------------------------------------------------
BIG_BATCH=$("$PY" -c 'from edgeag.export import PTE_MAX_BATCH; print(PTE_MAX_BATCH)')
# The x86-64 runner, built into native/build (or $EDGEAG_NATIVE_BUILD) if missing.
X86_RUNNER=$("$PY" -c 'from edgeag.export.native import runner_path; print(runner_path() or "")')
if [ -z "$X86_RUNNER" ]; then
  "$PY" -m edgeag.export.native
  X86_RUNNER=$("$PY" -c 'from edgeag.export.native import runner_path; print(runner_path())')
fi

FAILED=0
# Tags are RUNNER-NAME-PRECISION-bBATCH: actions/TAG.npy, logs/TAG.{stdout,stderr,json}.
for name in cartpole pendulum; do
  for precision in fp32 int8; do
    file=policy.pte; [ "$precision" = int8 ] && file=policy.int8.pte
    for batch in 1 "$BIG_BATCH"; do
      for cpu in cortex-a72 cortex-a76; do
        tag=${cpu#cortex-}-$name-$precision-b$batch
        # run.sh's own line (guest peak RSS, qemu's memory left out) ends the .stderr file;
        # --json writes the same figures. The runner's JSON line is the .stdout file.
        if "$ARM64_TOOLS/run.sh" --cpu "$cpu" --json "$OUT/logs/$tag.json" "$ROOTFS" -- \
             "$GUEST/bin/pte_runner" "$GUEST/work/$name/$file" --obs "$GUEST/work/$name/obs.npy" \
             --out "$GUEST/out/$tag.npy" --batch "$batch" \
             > "$OUT/logs/$tag.stdout" 2> "$OUT/logs/$tag.stderr"; then
          cp "$ROOTFS$GUEST/out/$tag.npy" "$OUT/actions/"
        else
          echo "FAILED $tag: $(head -c 600 "$OUT/logs/$tag.stderr")" >&2; FAILED=1
        fi
        tail -n 1 "$OUT/logs/$tag.stderr" | sed "s/^/$tag: /"
      done
      tag=x86-$name-$precision-b$batch
      if "$X86_RUNNER" "$ROOTFS$GUEST/work/$name/$file" --obs "$OUT/data/$name.obs.npy" \
           --out "$OUT/actions/$tag.npy" --batch "$batch" \
           > "$OUT/logs/$tag.stdout" 2> "$OUT/logs/$tag.stderr"; then :; else
        echo "FAILED $tag: $(head -c 600 "$OUT/logs/$tag.stderr")" >&2; FAILED=1
      fi
    done
  done
done

# --- Compare and summarise -------------------------------------------------------------
# Each runner's actions against the numpy reference, with verify's own check (the
# tolerances of edgeag.export.verify.TOLERANCES), and aarch64 against x86-64 directly.
VERSIONS=$(printf '%s\n' \
  "qemu: $(qemu-aarch64-static --version | head -n 1)" \
  "cross: $(aarch64-linux-gnu-g++ --version | head -n 1)" \
  "host: $("${CXX:-c++}" --version | head -n 1)" \
  "cmake: $("$CMAKE" --version | head -n 1)" \
  "executorch: $ET_VERSION (aarch64 wheel), $("$PY" -c 'import importlib.metadata as m; print(m.version("executorch"))') (x86-64 venv)")
"$PY" - "$WORK/runs" "$OUT" "$VERSIONS" <<'EOF' || FAILED=1
import json, sys
from pathlib import Path
import numpy as np
from edgeag.export.policy import load_run
from edgeag.export.verify import TOLERANCES, VerificationFailed, check_actions, reference

runs, out, versions = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].splitlines()
rows, failed = [], False
for name in ("cartpole", "pendulum"):
    spec = load_run(runs / name).spec
    obs = np.load(out / "data" / f"{name}.obs.npy")
    expected, outputs = reference(spec, obs)
    span = None if spec.discrete else spec.action_high.astype(np.float64) - spec.action_low
    for tag_file in sorted((out / "logs").glob(f"*-{name}-*.stdout")):
        tag = tag_file.name[:-len(".stdout")]
        runner, _, precision, batch = tag.split("-")
        row = {"tag": tag, "runner": runner, "policy": name, "precision": precision,
               "batch": int(batch[1:]), "observations": len(obs)}
        tolerance = TOLERANCES[("discrete" if spec.discrete else "continuous", precision)]
        actions_file = out / "actions" / f"{tag}.npy"
        try:
            actions = np.load(actions_file)
            row.update(check_actions(tag, "native", actions, expected, outputs, obs, tolerance,
                                     spec))
            row["within_tolerance"] = True
        except (OSError, VerificationFailed) as e:
            row.update(within_tolerance=False, error=str(e))
            failed = True
            rows.append(row)
            continue
        x86 = out / "actions" / f"x86-{name}-{precision}-{batch}.npy"
        if runner != "x86" and x86.is_file():
            other = np.load(x86)
            row["vs_x86"] = (float((actions == other).mean()) if spec.discrete else
                             float((np.abs(actions.astype(np.float64) - other) / span).max()))
        own = json.loads(tag_file.read_text().strip().splitlines()[-1])
        row["runner_peak_rss_mib"] = round(own["peak_rss_bytes"] / 2**20, 1)  # its VmHWM
        if runner != "x86":  # run.sh's figures; the runner's own VmHWM includes qemu
            guest = json.loads((out / "logs" / f"{tag}.json").read_text())
            row.update({k: guest[k] for k in ("guest_peak_rss_mib", "guest_peak_anon_mib",
                                              "guest_peak_file_mib", "emulator_own_mib")})
        rows.append(row)

(out / "summary.json").write_text(json.dumps({"versions": versions, "runs": rows}, indent=1))
print("\n".join(versions))
print(f"\n{'run':28s} {'n':>5s} {'vs reference':>22s} {'vs x86-64':>10s} "
      f"{'guest peak RSS MiB (anon/file)':>31s} {'own VmHWM':>9s}")
for r in rows:
    if not r["within_tolerance"]:
        print(f"{r['tag']:28s} FAILED: {r['error'][:200]}")
        continue
    if "agreement" in r:
        ref = f"agree {r['agreement']:.2%}"
        vs = f"{r['vs_x86']:.2%}" if "vs_x86" in r else "-"
    else:
        ref = f"max err {r['max_error_fraction_of_range']:.2e}"
        vs = f"{r['vs_x86']:.1e}" if "vs_x86" in r else "-"
    rss = (f"{r['guest_peak_rss_mib']:.1f} ({r['guest_peak_anon_mib']:.1f}/"
           f"{r['guest_peak_file_mib']:.1f})" if "guest_peak_rss_mib" in r else "-")
    print(f"{r['tag']:28s} {r['observations']:5d} {ref:>22s} {vs:>10s} {rss:>31s} "
          f"{r['runner_peak_rss_mib']:9.1f}")
print(f"\n(agreement: share of equal actions; max err: largest |action - reference| as a "
      f"fraction of the action range; vs x86-64 likewise. {out / 'summary.json'})")
sys.exit(1 if failed else 0)
EOF
exit $FAILED
