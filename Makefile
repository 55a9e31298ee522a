PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint tables gpu-measure clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-demo: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH) || $(BIN)/pip install -q "torch>=2.3,<2.15" torchvision
	$(BIN)/pip install -q -e ".[export,demo]"
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH) || $(BIN)/pip install -q "torch>=2.3,<2.15" torchvision
	$(BIN)/pip install -q -e ".[dev]"
	touch $@ $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(BIN)/proxyless demo

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# On a machine with a GPU and PyTorch installed (no venv needed): latency tables, searches, training, reports.
gpu-measure:
	$(PY) scripts/gpu_measure.py --out runs/gpu

clean:
	rm -rf $(VENV) .pytest_cache
