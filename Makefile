# Helpers around the README's two commands. Every target installs what it needs first.
PYTHON ?= python3
# torch is installed before the project so pip never resolves an unpinned torch (a multi-GB CUDA
# build on a CPU machine). On a GPU machine install your CUDA build of torch first: it is kept.
TORCH_SPEC ?= torch==2.13.0
STAMP := .make/installed
DEV_STAMP := .make/installed-dev
QUERIES := "beyonse halo" "metalica nothing else maters" "wireles hedphones" "the beatles"

.PHONY: install install-dev quickstart spell-small-cpu test test-fast clean

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

## The main job: train the quickstart recipe on the shipped data (CPU is enough), choose its copy
## margin on half of the dev set (best fix rate changing at most 13 % of correct queries), evaluate on the
## whole dev set, correct a few queries.
quickstart: install
	$(PYTHON) -m spellfix.cli train --recipe quickstart --output-dir runs/quickstart --resume never
	$(PYTHON) -m spellfix.cli calibrate --model runs/quickstart --data data/dev.jsonl --limit 1617
	$(PYTHON) -m spellfix.cli evaluate --model runs/quickstart --data data/dev.jsonl --json runs/quickstart/eval.json
	$(PYTHON) -m spellfix.cli correct --model runs/quickstart $(QUERIES)

## The shipped corrector models/spell-small-cpu (issue 8), in five stages: the spell-small-cpu recipe
## (queries), spell-small-cpu-words (continues it with one-word queries of common English words added),
## spell-small-cpu-polish (a low-LR pass over twice the queries and words), spell-small-cpu-extend
## (a longer low-LR pass over all queries and 100k words) and spell-small-cpu-realword (real-word errors
## at dev's share); on 2 cores stages 1-3 took ~1 h, ~55 min and ~35 min (November), stages 4 and 5
## 39 and 21 min (December, sharing the machine); re-running resumes a capped stage.
## Then fit the acceptance rule on half of the dev set
## (split by corrected word; best fix rate changing at most 5.5 % of its correct queries; the other half is reported) and copy the final model (end of the cosine decay) into models/,
## keeping the hand-written model card (update its figures from benchmarks/accuracy.py).
spell-small-cpu: install
	$(PYTHON) -m spellfix.cli train --recipe spell-small-cpu --output-dir runs/spell-small-cpu --resume auto
	$(PYTHON) -m spellfix.cli train --recipe spell-small-cpu-words --output-dir runs/spell-small-cpu-words --resume auto
	$(PYTHON) -m spellfix.cli train --recipe spell-small-cpu-polish --output-dir runs/spell-small-cpu-polish --resume auto
	$(PYTHON) -m spellfix.cli train --recipe spell-small-cpu-extend --output-dir runs/spell-small-cpu-extend --resume auto
	$(PYTHON) -m spellfix.cli train --recipe spell-small-cpu-realword --output-dir runs/spell-small-cpu-realword --resume auto
	$(PYTHON) -m spellfix.cli calibrate --model runs/spell-small-cpu-realword/final --data data/dev.jsonl --holdout word --objective fixed --max-fpr 0.055
	rm -rf models/spell-small-cpu.tmp && cp -r runs/spell-small-cpu-realword/final models/spell-small-cpu.tmp
	cp models/spell-small-cpu/README.md models/spell-small-cpu.tmp/ 2>/dev/null || true   # keep the model card
	rm -rf models/spell-small-cpu && mv models/spell-small-cpu.tmp models/spell-small-cpu

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

## A built wheel in a fully fresh venv (torch==2.13.0 first, then the wheel and its dependencies),
## used from outside the checkout: recipes, the shipped model, the quickstart's data. Minutes.
.PHONY: wheel-check
wheel-check: install-dev
	SPELLFIX_WHEEL_FRESH=1 $(PYTHON) -m pytest -q tests/test_wheel.py
