#!/usr/bin/env bash
# CUDA check of LLMSRec on one H100/H200 in under 10 minutes: bf16, peak memory and speed of our
# training step and evaluation against the authors' algorithm, for SmolLM2-135M and LLaMA-3.2-1B/3B
# shapes (random weights). Appends its report to benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu_check.sh            # needs a CUDA build of torch and this package's dependencies
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
pip install --no-deps -q -e . >/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
out=$(mktemp)
timeout 540 python benchmarks/llmsrec_step.py --device cuda --shapes smollm2 llama-1b llama-3b \
    --batch 20 20 20 --repeats 3 --ablate --out "$out"
{ echo; echo "## GPU run ($(date -u +%Y-%m-%d))"; echo; sed '1d' "$out"; } >> benchmarks/RESULTS.md
cat "$out"
