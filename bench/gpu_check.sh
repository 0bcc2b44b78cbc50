#!/usr/bin/env bash
# Issue 13's GPU figures in one command: python -m bench.gpu, on a machine that may lack diffusers.
#
# The lent GPU machine has torch and transformers but not diffusers. Before the run, on a machine
# with pip and the registry (in the repository root):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1
# (diffusers' other needs are there already; on Python >= 3.8 it does not import importlib_metadata.)
# Then carry .whl with the working tree and run, with a 600 s limit:  bash bench/gpu_check.sh
# Arguments are passed on to bench.gpu (e.g. --budget 300). The log is also written to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import diffusers" 2>/dev/null; then
  if ! ls .whl/diffusers-*.whl >/dev/null 2>&1; then
    echo "error: diffusers is not installed and no diffusers wheel is in .whl/ (see the top of $0)" >&2
    exit 2
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
python3 -m bench.gpu "$@" 2>&1 | tee "${OUT:-/tmp}/bench_gpu.log"
