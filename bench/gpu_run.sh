#!/usr/bin/env bash
# The GPU benchmark as one prepared run on a lent machine (about 8 min on an H200).
# Here, once: bash bench/fetch_wheels.sh; then the device tool's
#   run(command="bash bench/gpu_run.sh", carry=[".whl"], timeout_s=600)
# Results come back under $OUT: gpu.json (rewritten after every section), gpu.log, env.txt.
# BENCH_ARGS adds arguments (a CPU check of this script: "--tiny --device cpu ...").
set -uo pipefail
OUT="${OUT:-bench/out}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
    python3 -c "import torch, diffusers, triton; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
# random weights of the real size (nothing can be downloaded there); the bench skips what
# would end after --deadline-s and keeps every finished section in gpu.json
timeout 560 python3 -m bench.gpu --random --deadline-s 430 --out "$OUT/gpu.json" ${BENCH_ARGS:-} 2> "$OUT/gpu.log"
rc=$?
tail -n 25 "$OUT/gpu.log"
exit $rc
