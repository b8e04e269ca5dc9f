#!/usr/bin/env bash
# The CPU study of results/README.md that is still to run, as two queues of resumable runs on
# ml-100k with SmolLM2-135M, one torch thread each, so that both fit on 2 cores and 24 GB:
#
#   bash benchmarks/cpu_ml100k.sh lora    # the converged LoRA comparison (issue "LoRA baselines"):
#                                         # SASRec, Pop, LLaRA, LLMSRec, TALLRec on 2 seeds, then the
#                                         # training-time shuffle of every row, then CoLLM (~18 GB RSS)
#   bash benchmarks/cpu_ml100k.sh study   # the ablations and LLMSRec-randomLLM on the converged profile
#                                         # (2 seeds), then the convergence study's open questions (issue
#                                         # "LLMSRec must learn"), with gradient checkpointing (~3 GB)
#
# Run them side by side, never two of the same queue. Every run stores its result under
# results/ml-100k/ and --compare reuses stored rows and continues an interrupted training from
# its last validation, so a rerun of a queue picks up where the last one stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
compare() { "$python" run_recbole_llmsrec.py --show_progress=False "$@"; }
converged=properties/quick_start/ml-100k-converged.yaml
study=properties/quick_start/ml-100k-study.yaml
prefixes=train_samples=3,validations_per_epoch=6   # the study's three prefixes per user, one validation every ~24 steps

case "${1:-}" in
lora)
    compare --compare=SASRec,Pop,LLaRA,LLMSRec,TALLRec --config_files=$converged --seeds=2 --probes=shuffle,similarity
    compare --compare=SASRec,Pop,LLaRA,LLMSRec,TALLRec --config_files=$converged --seeds=2 --probes=all
    compare --compare=SASRec,Pop,LLaRA,LLMSRec,TALLRec,CoLLM --config_files=$converged --seeds=2 --probes=all
    ;;
study)
    # --report=False: each run only stores its rows; the profiles' combined reports are written by
    # the commands in results/README.md ("Not done") and by the lora queue
    row_flags="--llm_gradient_checkpointing=True --report=False"
    # teacher dropout off against the authors' on (the study's lr 1e-3 row)
    compare --compare="LLMSRec[$prefixes,teacher_dropout=False]" --config_files=$study --probes=shuffle,similarity --epochs=1 $row_flags
    # users per epoch: 199 users' samples (the same ones they have on every user) for 5 epochs = 150 steps
    compare --compare="LLMSRec[train_samples=3,train_users=199,validations_per_epoch=1]" --config_files=$study --probes=shuffle,similarity --epochs=5 $row_flags
    # the two ablations and the random-weight LLM on the converged profile (results of issue
    # "LLMSRec must learn", item 6)
    compare --compare=LLMSRec-noU,LLMSRec-noDU,LLMSRec-randomLLM --config_files=$converged --seeds=2 --probes=shuffle,similarity $row_flags
    # the CF baselines' second seed
    compare --compare=GRU4Rec,NARM,BERT4Rec --config_files=$study --seeds=2 --probes=shuffle,similarity --report=False
    # history length 10 (the paper's) against 5
    compare --compare="LLMSRec[$prefixes,history_length=10]" --config_files=$study --probes=shuffle,similarity --epochs=1 $row_flags
    ;;
*)
    echo "usage: bash benchmarks/cpu_ml100k.sh lora|study" >&2
    exit 2
    ;;
esac
