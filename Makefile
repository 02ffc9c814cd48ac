# Two commands: `make demo` runs the main job end to end; `make test` runs the tests.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo

.PHONY: demo test install clean

$(BIN)/dupn: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/dupn

install: $(BIN)/dupn

demo: $(BIN)/dupn
	$(BIN)/python -m pipeline.demo --out $(DEMO_DIR)

# One worker per core, at most 4 (pytest-xdist; each worker holds TensorFlow and its own backfilled
# work dir, 2-3 GB), a test file's tests on one worker: module fixtures are built once, and the
# Beam and Python-bound tests use the cores TensorFlow leaves idle.
test: $(BIN)/dupn
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile tests

clean:
	rm -rf $(VENV) $(DEMO_DIR) *.egg-info
