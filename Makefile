# rlhf-edu: the README's two commands, `make demo` and `make test`, each set up their own .venv
# with the exact versions of requirements/lock.txt (what CI tested).
PYTHON ?= python3
VENV   ?= .venv
# The CPU build of PyTorch. Override on a GPU machine, e.g. `make TORCH=torch demo`.
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
OUT    ?= runs/demo
LOCK   := requirements/lock.txt
# Seconds a single notebook cell may run in `make notebooks` / `make chapter` before it fails.
CELL_TIMEOUT ?= 300
PIP_QUIET := 2>&1 | grep -v "^WARNING: Location" || true
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with chapters/nbval_sanitize.cfg -p no:cacheprovider
# "Another machine" on this one: PyTorch's generic CPU kernels and a single thread change the last bits
# of floats the way a different CPU, BLAS or thread count does.
OTHER_CPU := ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

.PHONY: demo test test-fast test-other-cpu test-latest lock notebooks chapter book slides student figures benchmarks clean

# torch first (the CPU build), then every other package at its locked version, then the project itself.
$(BIN)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip $(PIP_QUIET)
	$(BIN)/pip install -q "$(TORCH)" $(PIP_QUIET)
	$(BIN)/pip install -q -r $(LOCK) $(PIP_QUIET)
	$(BIN)/pip install -q --no-deps -e . $(PIP_QUIET)
	$(BIN)/pip check
	$(BIN)/python -c "import torch, transformers, nbval, rlhf_edu; print('installed torch', torch.__version__, 'transformers', transformers.__version__)"
	touch $@

## The book's main job: the end-to-end demo on the default tiny model (figures and metrics in $(OUT)).
demo: $(BIN)/.installed
	$(BIN)/rlhf-edu demo --out $(OUT)

## Every test: the library's unit, twin and training tests, then every chapter notebook under nbval.
test: $(BIN)/.installed
	$(BIN)/python -m pytest tests chapters $(NBVAL)

## The same suite as another CPU would run it (CI runs both; the browser tests, which only check that a
## slider redraws its figure, run once, in `make test`). On an AVX-512 CPU the chapters then run a third
## time on ATen's AVX2 kernels: another rounding again, which once failed a chapter that the generic kernels
## passed. Elsewhere the AVX2 kernels are the native ones `make test` ran (and a CPU without AVX2 cannot run them).
test-other-cpu: $(BIN)/.installed
	$(OTHER_CPU) $(BIN)/python -m pytest tests chapters $(NBVAL) -m "not browser"
	@if $(BIN)/python -c "import sys, torch; sys.exit(torch.backends.cpu.get_cpu_capability() != 'AVX512')"; then \
		echo "AVX-512 CPU: the chapters once more on ATen's AVX2 kernels (threads as in make test)"; \
		ATEN_CPU_CAPABILITY=avx2 $(BIN)/python -m pytest chapters $(NBVAL); \
	else echo "no AVX-512 here: the AVX2 kernels are the native ones (or absent); no third pass"; fi

## The library's tests only (no notebooks), for a quick loop while editing.
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest tests -x -q -m "not slow"

## The suite on the newest releases the ranges of pyproject.toml allow (not the lock), in .venv-latest:
## drift seen here before users see it (torch stays at $(TORCH): an eager upgrade would fetch a CUDA build). Not part of CI.
test-latest:
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install -q --upgrade pip $(PIP_QUIET)
	.venv-latest/bin/pip install -q "$(TORCH)" $(PIP_QUIET)
	.venv-latest/bin/pip install -q --upgrade --upgrade-strategy eager -e ".[dev]" "$(TORCH)" $(PIP_QUIET)
	.venv-latest/bin/pip list --format=freeze | grep -iE "^(torch|transformers|numpy|scipy|matplotlib|nbval|pytest|jupytext)=="
	.venv-latest/bin/python -m pytest tests chapters $(NBVAL)

## Refresh requirements/lock.txt: the newest releases within pyproject.toml's ranges, resolved with
## pip-tools (torch is installed on its own, from $(TORCH), and left out of the lock).
lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q pip-tools $(PIP_QUIET)
	.venv-lock/bin/pip-compile --quiet --upgrade --extra dev --extra trl --strip-extras --unsafe-package torch -c requirements/torch-cpu.txt \
	    --no-emit-find-links --no-emit-index-url --no-emit-trusted-host -o $(LOCK) pyproject.toml

## Chapter sources are MyST Markdown (chapters/NN_topic.md) paired with the stored, executed notebooks by
## jupytext. `make chapter N=02` writes chapters/02_*.ipynb from its .md (outputs of unchanged cells kept)
## and executes it; `make notebooks` does every chapter.
chapter: $(BIN)/.installed
	@test -n "$(N)" || { echo "usage: make chapter N=02"; exit 2; }
	@for md in chapters/$(N)_*.md; do \
	    nb=$${md%.md}.ipynb; \
	    echo "$$md -> $$nb"; \
	    $(BIN)/jupytext --quiet --to ipynb --update "$$md" && \
	    $(BIN)/jupyter nbconvert --log-level WARN --to notebook --execute --inplace \
	        --ExecutePreprocessor.timeout=$(CELL_TIMEOUT) "$$nb" || exit 1; \
	done

notebooks: $(BIN)/.installed
	@for md in chapters/[0-9A-Z]*_*.md; do \
	    n=$$(basename $$md | cut -d_ -f1); $(MAKE) --no-print-directory chapter N=$$n || exit 1; \
	done

## The HTML book (Sphinx + MyST-NB + sphinx-book-theme) from the stored notebooks, no re-execution, warnings
## as errors; open _build/book/index.html in a browser (offline: MathJax and search are local).
book: $(BIN)/.installed
	$(BIN)/sphinx-build -W --keep-going -q -b html book _build/book
	@echo "open _build/book/index.html"

## One reveal.js deck per chapter (nbconvert's slides exporter; slide metadata lives in the .md sources, added
## by tools/annotate_slides.py), self-contained and offline, in _build/slides/: open NN_topic.slides.html.
slides: $(BIN)/.installed
	$(BIN)/python tools/slides.py --out _build/slides

## The student edition in _build/student/: nbgrader's ClearSolutions replaces what lies between
## `### BEGIN SOLUTION` and `### END SOLUTION` by a stub and clears those cells' outputs; the checkers still run.
student: $(BIN)/.installed
	$(BIN)/python tools/student.py --out _build/student

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
	rm -rf $(VENV) .venv-latest .venv-lock runs .pytest_cache _build
