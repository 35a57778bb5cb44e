# Two commands set everything up on a fresh machine:
#   make demo   - create .venv, install lorascope, run the demo (train runs, analyze them, write a report)
#   make test   - create .venv, install lorascope with its test extras, lint (ruff), run the test suite
# TORCH_SPEC picks the PyTorch build installed before the project (default: the CPU build 2.13.0;
# e.g. TORCH_SPEC=torch for the newest release, or pre-install your own torch in .venv).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= test,hf,ray
BIN := $(VENV)/bin
LINTED := lorascope tests benchmarks examples

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/lorascope demo

test: $(VENV)/.installed
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
