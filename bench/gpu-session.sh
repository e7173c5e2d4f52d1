#!/bin/bash
# Every GPU check in one pass, for a machine with an NVIDIA GPU and cupy: the card,
# the GPU tests (and the CPU-mode tests, which must hold where a GPU exists too)
# and bench/gpu.py. Runs from a source tree with no install and no network:
#
#     OUT=bench/results PYTHON=python3 bench/gpu-session.sh
#
# The interpreter named by PYTHON needs cupy, numpy, scipy, cloudpickle, psutil,
# pytest and pytest-timeout. Well under 5 minutes on an H100.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/daemon${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/card.txt"
"$PY" -c 'import sys, cupy, numpy, scipy, cloudpickle
print("python", sys.version.split()[0], "cupy", cupy.__version__, "numpy", numpy.__version__,
      "scipy", scipy.__version__, "cloudpickle", cloudpickle.__version__,
      "cuda runtime", cupy.cuda.runtime.runtimeGetVersion())' 2>&1 | tee -a "$OUT/card.txt"

start=$SECONDS
timeout 200 "$PY" -m pytest -q -rs -s -p no:cacheprovider -o junit_family=legacy --junitxml="$OUT/gpu-tests.xml" \
    tests/gpu tests/test_gpu_cpu_mode.py 2>&1 | tee "$OUT/gpu-tests.log"
tests_rc=${PIPESTATUS[0]}
echo "tests: rc $tests_rc in $((SECONDS - start)) s"

start=$SECONDS
timeout 230 "$PY" bench/gpu.py --budget 200 --out "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu-bench.log"
bench_rc=${PIPESTATUS[0]}
echo "bench: rc $bench_rc in $((SECONDS - start)) s"
exit $((tests_rc || bench_rc))
