# Two commands for a newcomer: `make demo` (install + the main job end to end on real data)
# and `make test` (install + the test suite). GPU users: `make install TORCH_SPEC=torch`
# (or install their CUDA torch first; an installed torch >= 2.4 is kept).
PYTHON ?= python3
VENV ?= .venv
DATA_DIR ?= ../shared/data
OUT ?= outputs
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test lint bench clean

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
			--n-docs 1000 --out $(OUT)/advantage-$$target || exit 1; \
	done

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	PROXIMITY_DATA_DIR=$(DATA_DIR) $(BIN)/python benchmarks/bench_stats.py

clean:
	rm -rf $(OUT) .pytest_cache
