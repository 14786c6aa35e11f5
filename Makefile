# Set-up is one virtual environment with the package installed editable; every target creates it if needed.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-all bench clean-venv

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,postgres,timm,onnx]' 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import prune_nas, torch, optuna" && touch $@

demo: $(VENV)/.installed  ## the main job on the embedded digits data (CPU, about two minutes)
	$(VENV)/bin/prune-nas discover --method slimming

test: $(VENV)/.installed  ## lint (ruff), layer contract, then the fast tests (slow and GPU tests deselected)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest

test-all: $(VENV)/.installed
	$(PY) -m pytest -m "not gpu"

bench: $(VENV)/.installed
	$(PY) benchmarks/cost_throughput.py

clean-venv:
	rm -rf $(VENV)
