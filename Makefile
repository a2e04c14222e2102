# Two commands do everything on a fresh clone: `make reproduce` and `make test`.
# Both create .venv when it is missing and (re)install only when pyproject.toml changed.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.canlib-installed
PROFILE ?= synthetic

.PHONY: install test reproduce stress bench bench-train lint clean-venv

install: $(STAMP)

# The stamp depends on pyproject.toml: editing the dependencies reinstalls, nothing else does.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[notebooks,dev]'
	touch $(STAMP)

# Unit tests, then the committed notebooks re-executed by nbval (outputs go to a temporary
# folder, so results/ and figures/ are never touched by a test run).
test: $(STAMP)
	CANLIB_OUTPUT_ROOT=$$(mktemp -d) $(PY) -m pytest -q tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider

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

clean-venv:
	rm -rf $(VENV)
