PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint tables gpu-measure gpu-train-fmnist fmnist-train-long fmnist-train-1x fmnist-search fmnist-zoo \
	fmnist-supernet fmnist-supernet-bundle fmnist-train-largest fmnist-train-alone gpu-elastic-ranking \
	gpu-fmnist-supernet clean

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
	@command -v c++ >/dev/null || command -v g++ >/dev/null || command -v clang++ >/dev/null || \
	  echo "note: no C++ compiler: the AOTInductor .pt2 test is skipped (.ci/run installs g++)"
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Regenerate the shipped CPU latency tables (this machine, batch 1, 1 thread; built by the runtime registry as
# `proxyless export` ships them), their validations and the Pixel-1
# table + predictor (~30 min on 2 cores). GPU tables: `make gpu-measure` on a GPU machine.
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

# On a machine with a GPU and PyTorch installed (no venv needed): GPU latency tables, the Fashion-MNIST
# searches and trainings, GPU reports, inside about 8 minutes. Run it again to continue an interrupted run.
gpu-measure:
	$(PY) scripts/fmnist_pipeline.py --device cuda --gpu-tables --bench --pack --out runs/gpu

# On a GPU machine: train the baseline and the three nets of the committed 1.0x CPU searches (no search) with the
# pipeline's recipe (40 epochs, batch 256, bf16), side by side; resumable. Bundle the result on this CPU afterwards:
#   python scripts/fmnist_pipeline.py --device cpu --archs-from benchmarks/results/fmnist_search_cpu_1x \
#     --targets cpu,mobile,gpu --bundle --out runs/gpu-fmnist-1x
gpu-train-fmnist:
	$(PY) scripts/fmnist_pipeline.py --device cuda --archs-from benchmarks/results/fmnist_search_cpu_1x \
		--targets cpu,mobile,gpu --budget 540 --report-reserve 20 --pack --out runs/gpu-fmnist-1x

# The previous bundle's trainings on this CPU (docs/history.md): the baseline and the nets of the 0.8x searches,
# same recipe, float32 (12-14 hours on 2 cores, side by side; resumable: run it again to continue). BUDGET
# (seconds) stops them checkpointed before a session ends.
BUDGET ?= 86400
fmnist-train-long: $(VENV)/.installed-dev
	$(BIN)/python scripts/fmnist_pipeline.py --device cpu --threads 1 \
		--archs-from benchmarks/results/fmnist_search_cpu_long --targets cpu,mobile,gpu \
		--budget $(BUDGET) --report-reserve 0 --train-args "--eval-every 5" --bundle --out runs/fmnist_long

# The same recipe for the baseline and the nets of the 1.0x searches (bundled until 2026-12-05; 25-31M MACs: about 12 hours
# for the four on 2 cores; resumable: run it again to continue, BUDGET seconds at a time). TARGETS picks the
# searched nets to train; BUNDLE=--bundle then replaces the bundled nets and regenerates docs/results.md's table.
# Their recorded metrics: benchmarks/results/fmnist_train_cpu_1x/.
BUNDLE ?=
TARGETS ?= cpu,mobile,gpu
fmnist-train-1x: $(VENV)/.installed-dev
	$(BIN)/python scripts/fmnist_pipeline.py --device cpu --threads 1 \
		--archs-from benchmarks/results/fmnist_search_cpu_1x --targets $(TARGETS) --factor 1.0 \
		--budget $(BUDGET) --report-reserve 0 --train-args "--eval-every 5" $(BUNDLE) \
		--out runs/fmnist_train_1x

# The three 12-epoch searches alone on this CPU (a shared warm-up of about 10 core-minutes, then about 30
# core-minutes per search: some 50 minutes with the three side by side; resumable), each under FACTOR x the
# baseline's predicted latency, with the default loss (mul#ratio) and the authors' schedule (full_v2 gates, an alpha
# step every 5 weight steps, none in the first search epoch), except the alpha lr: 1e-2, as 12 short epochs give
# about 340 alpha steps (docs/latency-loss.md). It ends with search/compare.json (each net on all three tables, the
# layers each pair differs in) and a convergence report per arch.json. Then train their archs with the pipeline's
# --archs-from=runs/fmnist_search_$(FACTOR)/search. Each FACTOR has its own folder; TARGETS=cpu runs the CPU search
# alone (as the head-to-head with the elastic route at 0.75x needs: benchmarks/search_head_to_head.py).
# RATIO_BETA is mul#ratio's exponent below the target; another value needs another SEARCH_OUT.
# WARMUP_EPOCHS=0 WARMUP_ARGS="--init-elastic bundled" starts the candidates from the bundled elastic supernet
# instead of a uniform-path warm-up (search/gradient/warm_start.py, docs/latency-loss.md).
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

# The same searches and trainings on this CPU (hours; resumable: run it again to continue).
fmnist-zoo: $(VENV)/.installed-dev
	$(BIN)/python scripts/fmnist_pipeline.py --device cpu --threads 1 --targets cpu,mobile,gpu \
		--search-limit-train 20000 --warmup-epochs 3 --search-epochs 3 --train-epochs 15 --batch-size 128 \
		--budget 86400 --report-reserve 0 --search-args "--grad-mode two --arch-every 2 --arch-lr 1e-2" \
		--train-args "--warmup-epochs 1 --eval-every 5" --bundle --out runs/fmnist

# The Fashion-MNIST elastic supernet (Once-for-All style, docs/elastic.md): 25 epochs of the sandwich rule, about
# 7 hours of one core here, run in resumable chunks of SUPERNET_MIN minutes. Its folder is committed while the run
# lasts (checkpoint with float16 EMA/momentum, logs) so the next session continues it; removed when it ends.
SUPERNET_MIN ?= 140
THREADS ?= 1
fmnist-supernet: $(VENV)/.installed-dev
	$(BIN)/proxyless search elastic-train --space fmnist --threads $(THREADS) --time-limit $(SUPERNET_MIN) --resume \
		--out checkpoints/fmnist_supernet

# Once that run has finished: bundle the supernet where a fresh clone finds it (weights, config, training log),
# drop the run's folder from the tree, and fit the accuracy predictor on 400 measured subnets (resumable: run it
# again to continue).
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

# The supernet's largest subnet (every layer k7 e6, full depth) trained alone with the bundled nets' 40-epoch recipe:
# the reference of benchmarks/elastic_inheritance.py. About 5 hours of one core, in resumable chunks of SUPERNET_MIN
# minutes; its folder is committed while the run lasts, like the supernet's.
fmnist-train-largest: $(VENV)/.installed-dev
	OMP_NUM_THREADS=$(THREADS) $(BIN)/proxyless search train --arch uniform:fmnist:k7e6 --epochs 40 --eval-every 5 \
		--time-limit $(SUPERNET_MIN) --resume --out checkpoints/fmnist_largest

# A bundled specialized net's arch (HW = cpu, mobile or gpu) trained alone from scratch with the 40-epoch recipe:
# does it beat fmnist_mobilenetv2 (94.59%) when each is trained alone? (The bundled weights come from the supernet
# and a 1-epoch fine-tune.) About 100 minutes on both cores here (2.5 minutes an epoch at THREADS=2), in resumable
# chunks of SUPERNET_MIN minutes; its folder is committed while the run lasts. HW=cpu: 94.52% (docs/results.md).
HW ?= cpu
fmnist-train-alone: $(VENV)/.installed-dev
	OMP_NUM_THREADS=$(THREADS) $(BIN)/proxyless search train --arch zoo/pretrained/fmnist_proxyless_$(HW) --epochs 40 \
		--eval-every 5 --time-limit $(SUPERNET_MIN) --resume --out checkpoints/fmnist_alone_$(HW)

# The ranking benchmark's ground truth trained to convergence on a GPU machine: its 12 pinned subnets, 40 epochs
# each (the 4-epoch CPU ground truth is as noisy as the spread it should rank: docs/elastic.md). Not yet run on one.
R40 := benchmarks/results/elastic_ranking_40ep
gpu-elastic-ranking:
	mkdir -p $(R40) && cp -n benchmarks/results/elastic_ranking/subnets.json $(R40)/
	$(PY) benchmarks/elastic_ranking.py --standalone-only --epochs 40 --device cuda --out $(R40) \
		--runs runs/elastic_ranking_40ep

# The same training on a GPU machine (no venv needed): minutes. Not yet run on one.
gpu-fmnist-supernet:
	$(PY) -m search elastic-train --space fmnist --device cuda --resume --out runs/gpu-fmnist-supernet

clean:
	rm -rf $(VENV) .pytest_cache
