# cnnlab: every target creates .venv (and installs the project) when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cnnlab-installed
ARGS ?=
LOGDIR ?= outputs
TB_PORT ?= 6123
DIR ?=
KERAS_VENV ?= .venv-keras
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist
# What a GPU machine with torch but no package index lacks: pure-Python wheels for Python 3.12.
# antlr4-python3-runtime 4.9.3 (omegaconf's pin) exists on PyPI only as a source archive, so
# its wheel (py3-none-any) is built here.
GPU_WHEELS := hydra-core==1.3.8 omegaconf==2.3.1 hydra-joblib-launcher==1.2.0
GPU_SOURCE_WHEELS := antlr4-python3-runtime==4.9.3

.DEFAULT_GOAL := help
.PHONY: help install train sweep assignment seed resume report test test-all bench bench-sweep bench-keras gpu-check gpu-bundle docs-figure docs-tensorboard tensorboard lint format clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install cnnlab with its dev tools

train: $(STAMP) ## the default experiment (MNIST, net_1, Adadelta, 30 epochs); ARGS="..." adds overrides
	$(PY) src/train.py $(ARGS)

sweep: $(STAMP) ## the assignment's optimizer comparison: -m optimizer=adadelta,adam,adagrad
	$(PY) src/train.py -m optimizer=adadelta,adam,adagrad $(ARGS)

assignment: $(STAMP) ## the assignment's whole study (3 sweeps, then assignment_report.md); ARGS="data=fashion_mnist ..."
	$(PY) src/study.py $(ARGS)

seed: # the old name of `assignment`, refused for one release
	$(error make seed is now make assignment)

resume: $(STAMP) ## finish a sweep that stopped (DIR=<sweep folder>): completed jobs are kept
	@test -n "$(DIR)" || { echo "usage: make resume DIR=outputs/train/multiruns/<sweep>"; exit 2; }
	$(PY) src/train.py --resume "$(DIR)"

report: $(STAMP) ## rebuild a sweep's report.md (DIR=<sweep, run or folder of sweeps>; default: the newest sweep)
	$(PY) src/report.py $(if $(DIR),"$(DIR)")

test: $(STAMP) ## the fast test suite (no network, synthetic data)
	$(PY) -m pytest

test-all: $(STAMP) ## every test, including those marked slow
	$(PY) -m pytest -m ""

bench: $(STAMP) ## pipeline vs bare PyTorch loop (fp32, then bf16-mixed + channels_last); BENCH_ARGS="..."
	$(PY) src/bench.py $(BENCH_ARGS)
	$(PY) src/bench.py --precision bf16-mixed --channels-last --accuracy-check $(BENCH_ARGS)

bench-sweep: $(STAMP) ## the optimizer sweep timed: default launcher against hydra/launcher=basic
	$(PY) src/bench.py --sweep --reps 2 $(BENCH_ARGS)

$(KERAS_VENV)/.installed:
	@test -x $(KERAS_VENV)/bin/python || $(PYTHON) -m venv $(KERAS_VENV)
	$(KERAS_VENV)/bin/pip install --quiet --disable-pip-version-check "tensorflow-cpu>=2.16"
	@touch $@

bench-keras: $(STAMP) $(KERAS_VENV)/.installed ## cnnlab against the assignment's Keras net_1 (in .venv-keras), quiet and beside 1 busy process
	$(PY) src/bench.py --keras $(KERAS_VENV)/bin/python --optimizer adam --reps 2 --load 1 $(BENCH_ARGS)

gpu-check: $(STAMP) ## the GPU path on a real GPU: gpu tests, sweeps, bench rows; JSON and page (no CUDA: refuses)
	$(PY) src/gpu_check.py --fashion-mnist $(FASHION_MNIST) $(BENCH_ARGS)

gpu-bundle: ## what travels to a GPU machine without a package index: .gpu/wheels, .gpu/fashion-mnist
	@test -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz || { echo "No Fashion-MNIST in $(FASHION_MNIST): apt-get install -y dataset-fashion-mnist, or FASHION_MNIST=<folder of its .gz files>"; exit 2; }
	rm -rf .gpu/wheels .gpu/fashion-mnist
	mkdir -p .gpu/wheels .gpu/fashion-mnist
	$(PYTHON) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
		--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels $(GPU_WHEELS)
	$(PYTHON) -m pip wheel --quiet --disable-pip-version-check --no-deps -w .gpu/wheels $(GPU_SOURCE_WHEELS)
	cp $(FASHION_MNIST)/*-ubyte.gz .gpu/fashion-mnist/
	@test $$(ls .gpu/wheels/*-py3-none-any.whl | wc -l) -eq 4 || { echo "expected 4 pure-Python wheels in .gpu/wheels"; exit 1; }
	@ls .gpu/wheels .gpu/fashion-mnist
	@du -sm .gpu | awk '{ print ".gpu: " $$1 " MiB"; if ($$1 > 60) { print "over 60 MiB: too much to carry"; exit 1 } }'

docs-figure: $(STAMP) ## the README's figure: a short optimizer sweep on real Fashion-MNIST
	$(PY) src/train.py -m optimizer=adadelta,adam,adagrad data=fashion_mnist trainer.max_epochs=3 \
		trainer.limit_train_batches=300 paths.log_dir=outputs/docs-figure
	cp "$$(ls -td outputs/docs-figure/train/multiruns/*/ | head -1)report_curves.png" \
		docs/images/fashion_mnist_optimizers.png

docs-tensorboard: $(STAMP) ## the TensorBoard screenshots in docs/images/, from the newest docs-figure sweep (needs chromium)
	@command -v chromium >/dev/null || { echo "make docs-tensorboard needs chromium: apt-get install -y chromium" >&2; exit 2; }
	@sweep="$$(ls -td outputs/docs-figure/train/multiruns/*/ 2>/dev/null | head -1)"; \
	test -n "$$sweep" || { echo "No sweep under outputs/docs-figure: run make docs-figure first" >&2; exit 2; }; \
	$(VENV)/bin/tensorboard --logdir "$$sweep" --port $(TB_PORT) >/dev/null 2>&1 & tb=$$!; \
	trap 'kill $$tb' EXIT; \
	runs=$$(find "$$sweep" -name 'events.out.tfevents.*' -printf '%h\n' | sort -u | wc -l); \
	for _ in $$(seq 60); do \
		$(PY) -c 'import json, sys, urllib.request as r; sys.exit(len(json.load(r.urlopen(sys.argv[1]))) < int(sys.argv[2]))' \
			"http://127.0.0.1:$(TB_PORT)/data/runs" "$$runs" 2>/dev/null && break; sleep 1; \
	done; \
	for tab in "scalars&_smoothingWeight=0" hparams; do \
		png="docs/images/tensorboard_$${tab%%&*}.png"; \
		chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=15000 \
			--window-size=1600,1000 --screenshot="$$png" "http://127.0.0.1:$(TB_PORT)/#$$tab" \
			>/dev/null 2>&1 || exit 1; \
		echo "$$png"; \
	done

tensorboard: $(STAMP) ## dashboards of everything under outputs/ (LOGDIR=<sweep folder> for one sweep)
	$(VENV)/bin/tensorboard --logdir $(LOGDIR)

lint: $(STAMP) ## ruff: lint and format check
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: $(STAMP) ## ruff: fix what can be fixed, then format
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

clean: ## remove run outputs and caches (keeps .venv and data/)
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -exec rm -rf {} +
