# Two entry points for a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench native clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/edgeag train --profile rpi4 --budget 256MB --out runs/demo-$$(date +%Y%m%d-%H%M%S)

bench: setup
	$(PY) scripts/bench_optim.py --json results/bench_optim.json
	$(PY) -m pip install --quiet stable-baselines3
	$(PY) scripts/bench_train.py --json results/bench_train.json

test: setup
	$(PY) -m pytest

# The native ExecuTorch runner (native/pte_runner, C++) against the executorch wheel's C++
# SDK, built with CMake into native/build/ (edgeag/export/native.py; docs/running.md).
native: setup
	$(PY) -m edgeag.export.native

lint: setup
	$(VENV)/bin/ruff check edgeag tests scripts examples

clean:
	rm -rf $(VENV) build native/build *.egg-info
