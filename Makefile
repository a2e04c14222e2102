# Two commands do everything on a fresh clone: `make reproduce` and `make test`.
# Both create .venv when it is missing and (re)install only when pyproject.toml changed.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.canlib-installed
PROFILE ?= synthetic

.PHONY: install test test-unit test-notebooks reproduce stress bench bench-train lint\
	numeric-spread clean-venv

install: $(STAMP)

# The stamp depends on pyproject.toml: editing the dependencies reinstalls, nothing else does.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[notebooks,dev]'
	touch $(STAMP)

# The unit tests and the notebooks run side by side (2 cores; the smoke profile trains on one
# thread). nbval re-executes the committed notebooks three times: under this CPU's default
# numeric setting and under two foreign ones, so a check that only holds on the machine that
# wrote the outputs fails here. Outputs go to temporary folders: results/ and figures/ are never
# touched by a test run.
NBVAL := $(PY) -m pytest -q notebooks --nbval-lax --nbval-current-env -p no:cacheprovider
FOREIGN_AVX2  := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
FOREIGN_SSE41 := ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41

test: $(STAMP)
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-unit test-notebooks lint

# Runs a command with CANLIB_OUTPUT_ROOT in a new temporary folder, removed afterwards, pass
# or fail: each test run trains the smoke rows, about 1 GB of runs, which would pile up in /tmp.
IN_TMP = sh -c 'out=$$(mktemp -d); CANLIB_OUTPUT_ROOT=$$out "$$@"; status=$$?; rm -rf "$$out"; exit $$status' --

test-unit: $(STAMP)
	$(IN_TMP) $(PY) -m pytest -q tests -p no:cacheprovider

test-notebooks: $(STAMP)
	$(IN_TMP) $(NBVAL)
	$(IN_TMP) env $(FOREIGN_AVX2) $(NBVAL)
	$(IN_TMP) env $(FOREIGN_SSE41) $(NBVAL)

reproduce: $(STAMP)
	$(PY) -m canlib reproduce --profile $(PROFILE)

stress: $(STAMP)
	$(PY) -m pytest -q -m slow --runslow

bench: $(STAMP)
	$(PY) benchmarks/eval_speed.py

# Training-step speed of every engine switch (on CUDA when present; --quick on a CPU).
bench-train: $(STAMP)
	$(PY) benchmarks/train_speed.py $(if $(shell $(PY) -c "import torch; print(torch.cuda.is_available() or '')"),,--quick)

lint: $(STAMP)
	$(PY) -m ruff check canlib tests benchmarks
	$(PY) -m ruff format --check canlib tests benchmarks

# How far the notebooks' numbers move across CPU numeric settings; --write refreshes
# notebooks/reference/smoke.json (after a change that moves the smoke numbers on purpose).
numeric-spread: $(STAMP)
	$(PY) benchmarks/numeric_spread.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
