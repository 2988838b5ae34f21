# One command to set everything up and run the demo, one to set up and run the tests.
# Both work on a fresh clone: they create .venv, install torch and the project, then run.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TORCH   = torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# Offline: resnet20 with the template's CustomNorm (BatchNorm2d) on scikit-learn's digits.
demo: setup
	$(BIN)/harness eval custom_norm.py --arch resnet20 --dataset digits --epochs 15 --out results/demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/train_throughput.py --arch resnet20 --dataset cifar10 \
		--json bench/results/cpu-resnet20-cifar10.json

clean:
	rm -rf $(VENV) results .pytest_cache
