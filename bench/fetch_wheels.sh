#!/usr/bin/env bash
# For a CUDA machine without package access that has torch 2.11 (CUDA 13), triton, numpy,
# safetensors, huggingface_hub, regex, requests and pillow: the wheels it lacks (diffusers,
# importlib_metadata), downloaded here into .whl/ (git-ignored); bench/gpu_run.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
exclude="$(git rev-parse --git-path info/exclude)"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl diffusers==0.42.1 importlib_metadata==8.7.0
ls -l .whl
