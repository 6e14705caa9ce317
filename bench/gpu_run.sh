#!/usr/bin/env bash
# The GPU benchmark in one command, on a CUDA machine (about 8 min on an H200 or H100):
#   bash bench/gpu_run.sh results/
# Writes into the folder: gpu.json (rewritten after every section, so a run cut short
# keeps what it measured), gpu.log (each section's JSON line as it is measured) and
# env.txt (GPU, driver, clocks, versions). Copy gpu.json to bench/gpu.json to keep it.
# A machine without package access: run bash bench/fetch_wheels.sh where there is one,
# bring the checkout with its .whl/ folder, and this script installs those wheels first.
# BENCH_ARGS adds arguments to bench.gpu (a CPU check of this script: "--tiny --device cpu ...").
set -uo pipefail
if [ $# -ne 1 ]; then
    echo "usage: bash bench/gpu_run.sh OUTPUT_FOLDER" >&2
    exit 2
fi
results="$1"
mkdir -p "$results"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
    python3 -c "import torch, diffusers, triton; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
} > "$results/env.txt" 2>&1
cat "$results/env.txt"
# random weights of the real size (time and memory do not depend on their values); the
# bench skips what would end after --deadline-s and keeps every finished section
timeout 560 python3 -m bench.gpu --random --deadline-s 430 --out "$results/gpu.json" ${BENCH_ARGS:-} 2> "$results/gpu.log"
rc=$?
tail -n 25 "$results/gpu.log"
exit $rc
