# Two commands for a newcomer: `make demo` (install + the main job end to end on real data)
# and `make test` (install + the test suite). GPU users: `make install TORCH_SPEC=torch`
# (or install their CUDA torch first; an installed torch >= 2.4 is kept).
PYTHON ?= python3
VENV ?= .venv
DATA_DIR ?= ../shared/data
OUT ?= outputs
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo grid-smoke reproduce reproduce-micro study-pretraining study-part study-merge \
	study-curves study-curves-copy \
	test lint bench \
	gpu-check clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: install
	PROXIMITY_DATA_DIR=$(DATA_DIR) $(BIN)/proximity similarity c4 starcoder math pycode gsm8k \
		--n-docs 1000 --out $(OUT)/similarity
	for target in gsm8k pycode; do \
		PROXIMITY_DATA_DIR=$(DATA_DIR) $(BIN)/proximity advantage --pretrain c4 --target $$target \
			--mix starcoder:0.2 --mix math:0.12 --mix alpaca:0.05 --mix c4:0.8+starcoder:0.1+math:0.1 \
			--mix starcoder --mix math \
			--n-docs 1000 --out $(OUT)/advantage-$$target || exit 1; \
	done
	@# The correlation on the committed micro results (figures/micro, written by `make reproduce`).
	if [ -f $(MICRO_FIGURES)/results.csv ]; then \
		PROXIMITY_DATA_DIR=$(DATA_DIR) $(BIN)/proximity correlate $(MICRO_FIGURES) --metric all \
			--out $(OUT)/micro && \
		$(BIN)/proximity report $(MICRO_FIGURES) --analysis $(OUT)/micro --out $(OUT)/micro/report.html; \
	else echo "no $(MICRO_FIGURES)/results.csv yet: run make reproduce"; fi

# The paper's grid at smoke scale (every node kind, about a minute): the quick look at train-grid.
RUNS ?= runs
MICRO_FIGURES ?= figures/micro
JOBS ?= 2
grid-smoke: install
	PROXIMITY_DATA_DIR=$(DATA_DIR) $(BIN)/proximity train-grid smoke --out $(RUNS)/smoke

# The study (issue 15, docs/STUDY.md): the `study` grid in parts, one model size and seed at a
# time into one folder (each part resumable after kill -9, each at most ~2 h on 2 cores), then
# the parts' tables merged and analysed into figures/study. `make study-part MODEL=micro-2l-128
# SEED=0` runs one part and saves its tables under figures/study/parts/ (commit them); `make
# study-merge` analyses whatever parts are saved; `make reproduce` runs every part, then merges.
STUDY_FIGURES ?= figures/study
STUDY_MODELS ?= micro-2l-128 micro-4l-128
STUDY_SEEDS ?= 0 1
MODEL ?= micro-2l-128
SEED ?= 0
study-part: install
	export PROXIMITY_DATA_DIR=$(DATA_DIR); set -e; \
	mkdir -p $(RUNS); \
	/usr/bin/time -f "part $(MODEL) seed $(SEED): %e s wall" -o $(RUNS)/study-$(MODEL)-$(SEED).time \
		$(BIN)/proximity train-grid study --out $(RUNS)/study --seeds $(SEED) \
		--set 'models=["$(MODEL)"]' --jobs $(JOBS); \
	$(BIN)/python -m proximity.training.grid.merge_parts collect $(RUNS)/study $(STUDY_FIGURES) \
		--part $(MODEL)-seed$(SEED); \
	cp $(RUNS)/study-$(MODEL)-$(SEED).time $(STUDY_FIGURES)/parts/time-$(MODEL)-seed$(SEED).txt

study-merge: install
	export PROXIMITY_DATA_DIR=$(DATA_DIR); set -e; \
	$(BIN)/python -m proximity.training.grid.merge_parts merge $(STUDY_FIGURES) --spec study; \
	$(BIN)/proximity correlate $(STUDY_FIGURES) --metric all --out $(STUDY_FIGURES); \
	$(BIN)/proximity report $(STUDY_FIGURES) --analysis $(STUDY_FIGURES) \
		--out $(STUDY_FIGURES)/report.html

# Figure 6's curves with intermediate evaluations: its chain (pretraining, the branch, the SFT
# run) retrained alone into a fresh folder with evaluation every CURVES_EVERY steps (every
# CURVES_SFT_EVERY in SFT). Evaluating changes no number, so the node ids are the grid's and
# the retraced losses must equal the committed ones (checked before the curves are copied
# beside the results). $(1): grid spec, $(2): figures folder, $(3): the retrace's grid folder.
# (--jobs $(JOBS) on a chain still runs one node at a time, but one thread each: two threads
# spin against other work on the machine.)
CURVES_EVERY ?= 40
CURVES_SFT_EVERY ?= 4
define retrace_curves
	set -- $$($(BIN)/python -m proximity.analysis.curves example $(2)); \
	$(BIN)/proximity train-grid $(1) --out $(3) --seeds $$3 --set "models=[\"$$2\"]" \
		--set eval.every=$(CURVES_EVERY) --set eval.sft_every=$(CURVES_SFT_EVERY) --only $$1 \
		--jobs $(JOBS); \
	$(BIN)/python -m proximity.analysis.curves copy $(3) $(2)
endef

study-curves: install
	export PROXIMITY_DATA_DIR=$(DATA_DIR); set -e; \
	$(BIN)/python -m proximity.training.grid.merge_parts merge $(STUDY_FIGURES) --spec study; \
	$(call retrace_curves,study,$(STUDY_FIGURES),$(RUNS)/study-curves)

# The study's first part: every pretraining run, one per core (alone, a part pretrains on one
# core while the other idles), and figure 6's chain with evaluation every CURVES_EVERY steps.
# Evaluating changes no number, so those are the grid's own nodes: the parts reuse them, and
# figure 6's curves need no separate retrace (`make study-curves` still does one on its own).
study-pretraining: install
	export PROXIMITY_DATA_DIR=$(DATA_DIR); set -e; \
	mkdir -p $(RUNS) $(STUDY_FIGURES)/parts; \
	$(BIN)/python -m proximity.training.grid.merge_parts merge $(STUDY_FIGURES) --spec study; \
	example=$$($(BIN)/python -m proximity.analysis.curves example $(STUDY_FIGURES)); \
	set -- $$example; \
	/usr/bin/time -f "part pretraining: %e s wall" -o $(RUNS)/study-pretraining.time \
		$(BIN)/proximity train-grid study --out $(RUNS)/study --only pretrain --only $$1 \
		--set eval.every=$(CURVES_EVERY) --set eval.sft_every=$(CURVES_SFT_EVERY) --jobs $(JOBS); \
	cp $(RUNS)/study-pretraining.time $(STUDY_FIGURES)/parts/time-pretraining.txt

reproduce: install
	$(MAKE) study-pretraining
	for model in $(STUDY_MODELS); do for seed in $(STUDY_SEEDS); do \
		$(MAKE) study-part MODEL=$$model SEED=$$seed || exit 1; \
	done; done
	$(MAKE) study-curves-copy
	$(MAKE) study-merge

# Figure 6's curves from the study's own grid folder (written there by study-pretraining),
# checked against the merged results first, copied beside them for study-merge to draw.
study-curves-copy: install
	export PROXIMITY_DATA_DIR=$(DATA_DIR); set -e; \
	$(BIN)/python -m proximity.training.grid.merge_parts merge $(STUDY_FIGURES) --spec study; \
	$(BIN)/python -m proximity.analysis.curves copy $(RUNS)/study $(STUDY_FIGURES)

# Micro's figure 6 retraced with evaluation every 20 steps (every 2 in its 14-step SFT runs).
# (The committed figures/micro cannot be retraced: its Pycode* runs read data that `pycode`
# no longer names, so the check would refuse them.)
reproduce-micro: CURVES_EVERY = 20
reproduce-micro: CURVES_SFT_EVERY = 2

# The earlier micro reproduction (figures/micro, kept as the record of that design): the grid
# (3 seeds), per-layer CKA of its branches, then the correlation, figures and report into figures/micro (results.csv, grid.yaml, the grid's
# own tokenizer and figure 6's three metrics.jsonl copied beside them, so `make demo` can
# redraw everything, the tokenizer comparison and the phase curves included, from the
# committed files).
reproduce-micro: install
	export PROXIMITY_DATA_DIR=$(DATA_DIR); set -e; P=$(BIN)/proximity; \
	$$P train-grid micro --seeds 0,1,2 --jobs $(JOBS) --out $(RUNS)/micro; \
	mkdir -p $(MICRO_FIGURES); \
	$$P cka --grid $(RUNS)/micro --data c4 --out $(MICRO_FIGURES); \
	cp $(RUNS)/micro/results.csv $(MICRO_FIGURES)/; \
	$(BIN)/python -m proximity.training.grid.merge_parts spec $(RUNS)/micro/grid.yaml $(MICRO_FIGURES); \
	for tok in $(RUNS)/micro/nodes/tokenizer-*; do \
		mkdir -p $(MICRO_FIGURES)/nodes/$$(basename $$tok); \
		cp $$tok/tokenizer.json $(MICRO_FIGURES)/nodes/$$(basename $$tok)/; \
	done; \
	$(call retrace_curves,micro,$(MICRO_FIGURES),$(RUNS)/micro-curves); \
	$$P correlate $(MICRO_FIGURES) --metric all --out $(MICRO_FIGURES); \
	$$P report $(MICRO_FIGURES) --analysis $(MICRO_FIGURES) --out $(MICRO_FIGURES)/report.html

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	PROXIMITY_DATA_DIR=$(DATA_DIR) $(BIN)/python benchmarks/bench_stats.py

# The prepared first check on a GPU (benchmarks/gpu_check.py; docs/TRAINING.md, "GPU check"):
# a verdict per item in <= 8 minutes on one H100. DEVICE=cpu is its rehearsal (tiny settings).
DEVICE ?= cuda
GPU_CHECK_OUT ?= $(OUT)/gpu-check
# On CUDA it then runs the GPU-path check of issue 16 (training/gpu_check.py: peak memory against
# the estimate, the Flash kernel, no host sync, eager and compiled, at the paper's 70M shape).
gpu-check: install
	PROXIMITY_DATA_DIR=$(DATA_DIR) $(BIN)/python benchmarks/gpu_check.py --device $(DEVICE) \
		--out $(GPU_CHECK_OUT); status=$$?; \
	if [ "$(DEVICE)" = cuda ]; then \
		$(BIN)/python -m proximity.training.gpu_check --preset 70m --micro-batch 32 \
			| tee $(GPU_CHECK_OUT)/gpu_path.txt || status=1; \
	fi; exit $$status

clean:
	rm -rf $(OUT) .pytest_cache
