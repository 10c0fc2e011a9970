# Helpers around the README's two commands. Every target installs what it needs first.
PYTHON ?= python3
# torch is installed before the project so pip never resolves an unpinned torch (a multi-GB CUDA
# build on a CPU machine). On a GPU machine install your CUDA build of torch first: it is kept.
TORCH_SPEC ?= torch==2.13.0
STAMP := .make/installed
DEV_STAMP := .make/installed-dev
QUERIES := "beyonse halo" "metalica nothing else maters" "wireles hedphones" "the beatles"

.PHONY: install install-dev quickstart test test-fast clean

## The library and its CLI (what the quickstart needs).
install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -e .
	mkdir -p .make && touch $(STAMP)

## Plus the test tools, peers, the SageMaker SDK and moto, tritonclient (the [dev] extra).
install-dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP)
	$(PYTHON) -m pip install -e ".[dev]"
	mkdir -p .make && touch $(DEV_STAMP)

## The main job: train the quickstart recipe on the shipped data (CPU is enough), evaluate, correct.
quickstart: install
	$(PYTHON) -m spellfix.cli train --recipe quickstart --output-dir runs/quickstart --resume never
	$(PYTHON) -m spellfix.cli evaluate --model runs/quickstart --data data/dev.jsonl --json runs/quickstart/eval.json
	$(PYTHON) -m spellfix.cli correct --model runs/quickstart $(QUERIES)

## The test suite (CPU only, tiny models). .ci/run calls exactly this.
test: install-dev
	$(PYTHON) -m pytest -q

test-fast: install-dev
	$(PYTHON) -m pytest -q -m "not slow"

clean:
	rm -rf .make runs .pytest_cache

## Triton's own Python env (numpy<2 + nvidia-pytriton's tritonserver; no torch): `spellfix serve`
## and tests/test_serving.py use it (the tests run this target when it is missing). Idempotent.
TRITON_ENV ?= .venv-triton
.PHONY: triton-env
triton-env:
	$(PYTHON) -m spellfix.serving.env create $(TRITON_ENV)
