# rlhf-edu: the README's two commands, `make demo` and `make test`, each set up their own .venv.
PYTHON ?= python3
VENV   ?= .venv
# The CPU build of PyTorch. Override on a GPU machine, e.g. `make TORCH=torch demo`.
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
OUT    ?= runs/demo

.PHONY: demo test test-fast figures benchmarks notebooks clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/pip install -q "$(TORCH)" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import torch, transformers, nbval, rlhf_edu; print('installed torch', torch.__version__)"
	touch $@

## The book's main job: the end-to-end demo on the default tiny model (figures and metrics in $(OUT)).
demo: $(BIN)/.installed
	$(BIN)/rlhf-edu demo --out $(OUT)

## Every test: the library's unit, twin and training tests, then every chapter notebook under nbval.
test: $(BIN)/.installed
	$(BIN)/python -m pytest tests chapters --nbval --nbval-current-env --nbval-sanitize-with chapters/nbval_sanitize.cfg -p no:cacheprovider

## The library's tests only (no notebooks), for a quick loop while editing.
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest tests -x -q -m "not slow"

## Slide-ready figures of the core library into figures/.
figures: $(BIN)/.installed
	$(BIN)/rlhf-edu figures --out figures

## Speed checks: vectorised GAE vs a Python loop, sampling with and without the KV cache, and (with the
## optional TRL extra installed: `$(BIN)/pip install -e ".[trl]"`) a DPO and a GRPO step against TRL.
benchmarks: $(BIN)/.installed
	$(BIN)/python benchmarks/advantages_speed.py
	$(BIN)/python benchmarks/sampling_speed.py
	$(BIN)/python benchmarks/trl_comparison.py

clean:
	rm -rf $(VENV) runs .pytest_cache
