# Two entry points on a fresh machine: `make demo` and `make test` (both set everything up).
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned: the CPU build; an unpinned torch would pull a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: setup demo test lint sim table
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/hoplink demo --codec tok8d16

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q

sim: setup
	$(VENV)/bin/hoplink sim

table: setup
	$(VENV)/bin/hoplink table
