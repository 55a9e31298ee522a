# One line per target here; what each does, how long it takes and its variables: docs/make-targets.md.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.14.1 torchvision==0.29.1
# PyPI's Linux torch wheel pulls about 4 GB of CUDA libraries and PyPI has no CPU-only one; where the PyTorch index
# is reachable, TORCH_INDEX=https://download.pytorch.org/whl/cpu installs its CPU-only build instead.
TORCH_INDEX ?=
TORCH_PIP := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))

.PHONY: demo test lint tables gpu-measure gpu-train-fmnist fmnist-train-long fmnist-train-1x fmnist-search fmnist-zoo \
	fmnist-supernet fmnist-supernet-bundle fmnist-train-largest fmnist-train-alone gpu-data gpu-elastic-ranking \
	gpu-fmnist-supernet clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-demo: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH_PIP) $(TORCH) || $(BIN)/pip install -q $(TORCH_PIP) "torch>=2.3,<2.15" torchvision
	$(BIN)/pip install -q -e ".[export,demo]"
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH_PIP) $(TORCH) || $(BIN)/pip install -q $(TORCH_PIP) "torch>=2.3,<2.15" torchvision
	$(BIN)/pip install -q -e ".[dev]"
	touch $@ $(VENV)/.installed-demo

# `make demo PORT=8080`: another port (set here, not read from the environment, so the default stays 7860)
PORT = 7860
demo: $(VENV)/.installed-demo
	$(BIN)/proxyless demo --port $(PORT)

test: $(VENV)/.installed-dev
	@command -v c++ >/dev/null || command -v g++ >/dev/null || command -v clang++ >/dev/null || \
	  echo "note: no C++ compiler: the AOTInductor .pt2 test is skipped (.ci/run installs g++)"
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Regenerate the shipped CPU latency tables and the Pixel-1 predictor (docs/make-targets.md#tables).
T := search/latency/tables
tables: $(VENV)/.installed-dev
	for s in fmnist imagenet; do for rt in onnxruntime openvino torch; do \
	  rm -f $(T)/$${s}_cpu_$${rt}_b1.json; \
	  $(BIN)/proxyless search profile --space $$s --device cpu --runtime $$rt --batch 1 --threads 1 \
	    --out $(T)/$${s}_cpu_$${rt}_b1.json || exit 1; \
	  $(BIN)/proxyless search validate-lut --lut $(T)/$${s}_cpu_$${rt}_b1.json --archs 20 --json || exit 1; \
	done; done
	$(BIN)/proxyless search mobile-table ../shared/reference/proxylessnas/mobile_trim.yaml --out $(T)/imagenet_pixel1_tflite_b1.json
	$(BIN)/proxyless search mobile-loo --png $(T)/imagenet_pixel1_tflite_b1.loo.png --json

# GPU machine: GPU tables, searches, trainings and reports (docs/make-targets.md#gpu-measure).
gpu-measure:
	$(PY) scripts/fmnist_pipeline.py --device cuda --gpu-tables --bench --pack --out runs/gpu

# GPU machine: train the baseline and the committed 1.0x searches' nets (docs/make-targets.md#gpu-train-fmnist).
gpu-train-fmnist:
	$(PY) scripts/fmnist_pipeline.py --device cuda --archs-from benchmarks/results/fmnist_search_cpu_1x \
		--targets cpu,mobile,gpu --budget 540 --report-reserve 20 --pack --out runs/gpu-fmnist-1x

# The previous bundle's trainings on this CPU, BUDGET seconds at a time (docs/make-targets.md#fmnist-train-long).
BUDGET ?= 86400
fmnist-train-long: $(VENV)/.installed-dev
	$(BIN)/python scripts/fmnist_pipeline.py --device cpu --threads 1 \
		--archs-from benchmarks/results/fmnist_search_cpu_long --targets cpu,mobile,gpu \
		--budget $(BUDGET) --report-reserve 0 --train-args "--eval-every 5" --bundle --out runs/fmnist_long

# The baseline and the 1.0x searches' nets on this CPU; BUNDLE=--bundle ships them (docs/make-targets.md#fmnist-train-1x).
BUNDLE ?=
TARGETS ?= cpu,mobile,gpu
fmnist-train-1x: $(VENV)/.installed-dev
	$(BIN)/python scripts/fmnist_pipeline.py --device cpu --threads 1 \
		--archs-from benchmarks/results/fmnist_search_cpu_1x --targets $(TARGETS) --factor 1.0 \
		--budget $(BUDGET) --report-reserve 0 --train-args "--eval-every 5" $(BUNDLE) \
		--out runs/fmnist_train_1x

# The three 12-epoch searches at FACTOR x the baseline's latency (docs/make-targets.md#fmnist-search).
FACTOR ?= 1.0
ARCH_LR ?= 1e-2
RATIO_BETA ?= 0.07
WARMUP_EPOCHS ?= 3
WARMUP_ARGS ?=
SEARCH_OUT ?= runs/fmnist_search_$(FACTOR)
fmnist-search: $(VENV)/.installed-dev
	$(BIN)/python scripts/fmnist_pipeline.py --device cpu --threads 1 --targets $(TARGETS) --factor $(FACTOR) \
		--search-only --search-limit-train 20000 --warmup-epochs $(WARMUP_EPOCHS) --search-epochs 12 \
		--batch-size 128 --warmup-args "$(WARMUP_ARGS)" \
		--search-args "--arch-lr $(ARCH_LR) --ratio-beta $(RATIO_BETA)" --out $(SEARCH_OUT)

# The 3-epoch searches and 15-epoch trainings on this CPU (docs/make-targets.md#fmnist-zoo).
fmnist-zoo: $(VENV)/.installed-dev
	$(BIN)/python scripts/fmnist_pipeline.py --device cpu --threads 1 --targets cpu,mobile,gpu \
		--search-limit-train 20000 --warmup-epochs 3 --search-epochs 3 --train-epochs 15 --batch-size 128 \
		--budget 86400 --report-reserve 0 --search-args "--grad-mode two --arch-every 2 --arch-lr 1e-2" \
		--train-args "--warmup-epochs 1 --eval-every 5" --bundle --out runs/fmnist

# The elastic supernet, SUPERNET_MIN minutes at a time (docs/make-targets.md#fmnist-supernet).
SUPERNET_MIN ?= 140
THREADS ?= 1
fmnist-supernet: $(VENV)/.installed-dev
	$(BIN)/proxyless search elastic-train --space fmnist --threads $(THREADS) --time-limit $(SUPERNET_MIN) --resume \
		--out checkpoints/fmnist_supernet

# Bundle the finished supernet and fit its accuracy predictor (docs/make-targets.md#fmnist-supernet-bundle).
RUN_DIR := checkpoints/fmnist_supernet
BUNDLE_DIR := search/elastic/pretrained/fmnist
fmnist-supernet-bundle: $(VENV)/.installed-dev
	@test -f $(BUNDLE_DIR)/supernet.json || test -f $(RUN_DIR)/supernet.json || \
	  { echo "the supernet run has not finished: make fmnist-supernet"; exit 1; }
	if [ -f $(RUN_DIR)/supernet.json ]; then mkdir -p $(BUNDLE_DIR) && \
	  for f in supernet.safetensors supernet.json metrics.json log.csv; do cp $(RUN_DIR)/$$f $(BUNDLE_DIR)/ || exit 1; done && \
	  $(BIN)/python -c "from search.elastic.store import load_supernet; load_supernet('$(BUNDLE_DIR)')" && \
	  git rm -rq --cached --ignore-unmatch $(RUN_DIR) && \
	  rm -rf $(RUN_DIR); fi
	$(BIN)/proxyless search elastic-predictor --supernet $(BUNDLE_DIR) --threads $(THREADS)

# The supernet's largest subnet trained alone (docs/make-targets.md#fmnist-train-largest).
fmnist-train-largest: $(VENV)/.installed-dev
	OMP_NUM_THREADS=$(THREADS) $(BIN)/proxyless search train --arch uniform:fmnist:k7e6 --epochs 40 --eval-every 5 \
		--time-limit $(SUPERNET_MIN) --resume --out checkpoints/fmnist_largest

# A bundled net's arch (ALONE=NAME, default fmnist_proxyless_$(HW)) trained alone with seed SEED; ALONE_ARCH takes
# the arch from another folder or file (docs/make-targets.md#fmnist-train-alone).
HW ?= cpu
ALONE ?= fmnist_proxyless_$(HW)
ALONE_ARCH ?= zoo/pretrained/$(ALONE)
SEED ?= 0
fmnist-train-alone: $(VENV)/.installed-dev
	OMP_NUM_THREADS=$(THREADS) $(BIN)/proxyless search train --arch $(ALONE_ARCH) --epochs 40 --seed $(SEED) \
		--eval-every 5 --time-limit $(SUPERNET_MIN) --resume --out checkpoints/alone_$(ALONE)_s$(SEED)

# GPU machine: one call of the device tool is 10 minutes at most, so each gpu-* training below stops checkpointed
# after GPU_MIN minutes and resumes on the next call (docs/make-targets.md#a-call-on-a-gpu-machine).
GPU_MIN ?= 8
GPU_DEVICE ?= cuda
GPU_RUNS ?= runs
GPU_ARGS ?=
# Copy the Fashion-MNIST IDX files into .carry/ (git-ignored) for a GPU machine, which has no Debian package.
gpu-data: $(VENV)/.installed-demo
	mkdir -p .carry/fashion-mnist && cp -u $$($(BIN)/python -c "from zoo.datasets import fmnist_dir; print(fmnist_dir())")/*-ubyte.gz .carry/fashion-mnist/

# GPU machine: the ranking benchmark's 12 subnets, 40 epochs each (docs/make-targets.md#gpu-elastic-ranking).
R40 ?= benchmarks/results/elastic_ranking_40ep
gpu-elastic-ranking:
	mkdir -p $(R40) && cp -n benchmarks/results/elastic_ranking/subnets.json $(R40)/
	$(PY) benchmarks/elastic_ranking.py --standalone-only --epochs 40 --device $(GPU_DEVICE) --out $(R40) \
		--runs $(GPU_RUNS)/elastic_ranking_40ep --budget-min $(GPU_MIN) $(GPU_ARGS)

# GPU machine: the elastic supernet (docs/make-targets.md#gpu-fmnist-supernet).
gpu-fmnist-supernet:
	$(PY) -m search elastic-train --space fmnist --device $(GPU_DEVICE) --resume --out $(GPU_RUNS)/gpu-fmnist-supernet \
		--time-limit $(GPU_MIN) $(GPU_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
