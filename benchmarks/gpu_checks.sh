#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run: the suite's CUDA tests (NumPy/torch twins on the GPU, token
# log-probs and generation on the GPU, a bfloat16 run of DPO and GRPO, every `rlhf-edu train` method in
# bfloat16) and GPU timings of benchmarks/trl_comparison.py. On a CPU machine the tests skip with a reason.
#
#   bash benchmarks/gpu_checks.sh [LOG_DIR]      (logs: LOG_DIR/*.txt, default gpu-logs)
#
# Runs from the repository root wherever it is called from, with $PYTHON (default: the project's .venv if it
# has one, else python3). Each part has its own time limit, so one slow part cannot eat the others' time;
# the exit status is 1 if any part failed or ran out of time (every part runs regardless).
set -u -o pipefail
LOG=${1:-gpu-logs}
mkdir -p "$LOG" && LOG=$(cd "$LOG" && pwd)
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
status=0
"$PYTHON" - <<'PY' 2>&1 | tee "$LOG/environment.txt" || status=1
import importlib
import torch
print("torch", torch.__version__, "| CUDA", torch.version.cuda, "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
for name in ("transformers", "tokenizers", "accelerate", "trl", "datasets", "pyarrow", "numpy"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as error:  # an optional package: report and go on
        print(name, "unavailable:", type(error).__name__, error)
PY
# -W default: a deprecation raised by another torch/transformers version is listed in the warnings summary,
# not a failure (pyproject.toml makes it an error), on this run only
timeout 240 "$PYTHON" -m pytest -q -m cuda -p no:cacheprovider -W default::DeprecationWarning -W default::FutureWarning \
    -rs tests/test_twins.py tests/test_lm.py tests/test_precision.py tests/test_train_command.py \
    tests/test_train_preference_data.py 2>&1 \
    | tee "$LOG/cuda_tests.txt" | tail -25 || status=1
for setting in "--layers 2 --width 128 --dtype float32" "--layers 12 --width 768 --dtype bfloat16"; do
    name=$(echo "$setting" | tr -d ' -' )
    # word splitting of $setting is wanted: it holds several options
    timeout 120 "$PYTHON" benchmarks/trl_comparison.py --device cuda --steps 6 --runs 2 --warmup 2 $setting 2>&1 \
        | grep -v "^{'train_runtime'\|examples/s" | tee "$LOG/benchmark_$name.txt" || status=1
done
exit $status
