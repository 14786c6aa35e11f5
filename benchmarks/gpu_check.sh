#!/usr/bin/env bash
# The prepared run for a lent GPU machine: the GPU tests, then the training-throughput benchmark.
# Usage there: OUT=/some/dir bash benchmarks/gpu_check.sh   (carry .whl with jsonschema's wheels if missing)
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/prune-nas-gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0])"; } | tee "$OUT/gpu.txt"
timeout 240 python3 -m pytest -m gpu tests/test_gpu.py -p no:cacheprovider -q -rs 2>&1 | tee "$OUT/gpu_tests.log"
timeout 330 python3 benchmarks/train_throughput.py --procs 4 >"$OUT/train_throughput.json" 2>"$OUT/train_throughput.log"
echo "benchmark exit $?"
cat "$OUT/train_throughput.json"; tail -5 "$OUT/train_throughput.log"
