# worldmodels — every command a user or CI needs. `make demo` and `make test` set up .venv on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PYGLET_HEADLESS := 1
export SDL_VIDEODRIVER := dummy
export SDL_AUDIODRIVER := dummy
export MPLBACKEND := Agg

.PHONY: setup demo test test-all bench reliability lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,miniworld,music]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) scripts/demo.py

test: setup
	$(PY) -m pytest -q -x --timeout=600

test-all: setup
	$(PY) -m pytest -q -m '' --timeout=3600

bench: setup
	$(PY) scripts/bench.py

reliability: setup
	$(PY) scripts/reliability.py

lint: setup
	$(VENV)/bin/ruff check worldmodels envs agents scripts tests
	$(VENV)/bin/mypy worldmodels envs agents

clean:
	rm -rf runs build *.egg-info .pytest_cache
