#!/usr/bin/env bash
# The CPU study of results/README.md that is still to run, as two queues of resumable runs on
# ml-100k with SmolLM2-135M in bfloat16 (~2.5x faster than float32 on this CPU, which has native
# bf16; benchmarks/RESULTS.md, "CPU rerun"), one torch thread each, so that both fit on 2 cores:
#
#   bash benchmarks/cpu_ml100k.sh lora    # after the float32 LLMSRec rows, the converged comparison in bf16 (profile ml-100k-converged-bf16):
#                                         # SASRec, Pop, LLMSRec, then TALLRec and LLaRA, on 2 seeds;
#                                         # then the training-time shuffle of every row, then CoLLM
#   bash benchmarks/cpu_ml100k.sh study   # the ablations, LLMSRec-randomLLM and the CF baselines on the
#                                         # same profile (2 seeds), then the convergence study's open
#                                         # questions (issue "LLMSRec must learn")
#
# Run them side by side, never two of the same queue. Every run stores its result under
# results/ml-100k/ and --compare reuses stored rows and continues an interrupted training from
# its last validation, so a rerun of a queue picks up where the last one stopped, on the same
# machine: the resume state lives in saved/, which a fresh clone does not have. Where machines
# last a few hours, only a row whose training ends inside them is kept: an LLMSRec-size row takes
# 1.6-2.8 h (one thread, beside the other queue; by CPU), ~1.7 h alone with two threads, a LoRA row
# more; run the lora queue alone with two threads (THREADS=2 bash benchmarks/cpu_ml100k.sh lora)
# to shorten its rows (results/README.md, "Not done").
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
compare() { "$python" run_recbole_llmsrec.py --show_progress=False "$@"; }
converged=properties/quick_start/ml-100k-converged.yaml
study=properties/quick_start/ml-100k-study.yaml
prefixes=train_samples=3,validations_per_epoch=6   # the study's three prefixes per user, one validation every ~24 steps
converged_bf16="$converged properties/quick_start/ml-100k-converged-bf16.yaml"   # the same in bfloat16 (profile ml-100k-converged-bf16)

case "${1:-}" in
lora)
    # the float32 converged LLMSRec rows (seed 2020 was interrupted) and their report
    compare --compare=SASRec,Pop,LLMSRec --config_files=$converged --seeds=2 --probes=shuffle,similarity
    # in bfloat16: LLMSRec on 2 seeds first (~50 min each), then the LoRA baselines (~3 h each)
    compare --compare=SASRec,Pop,LLMSRec --config_files="$converged_bf16" --seeds=2 --probes=shuffle,similarity
    compare --compare=SASRec,Pop,LLMSRec,TALLRec,LLaRA --config_files="$converged_bf16" --seeds=2 --probes=shuffle,similarity
    compare --compare=SASRec,Pop,LLMSRec,TALLRec,LLaRA --config_files="$converged_bf16" --seeds=2 --probes=all
    compare --compare=SASRec,Pop,LLMSRec,TALLRec,LLaRA,CoLLM --config_files="$converged_bf16" --seeds=2 --probes=all
    ;;
study)
    # --report=False: each run only stores its rows; the profiles' combined reports are written by
    # the lora queue and by the commands in results/README.md ("Not done")
    # No gradient checkpointing: it made a bf16 LLMSRec round 1.43x slower (608 s against 426 s of
    # training, 24 steps, one thread beside another run; AMD EPYC, 2026-12-06), and two such rows
    # without it fit in 24 GB (LLMSRec-randomLLM's peak RSS without it: 6.4 GB).
    row_flags="--report=False"
    # the ablations and the random-weight LLM, then the CF baselines (issue "LLMSRec must learn", item 6)
    compare --compare=LLMSRec-noU,LLMSRec-noDU,LLMSRec-randomLLM --config_files="$converged_bf16" --seeds=2 --probes=shuffle,similarity $row_flags
    # (no LLM: in the float32 profile, beside its LLMSRec rows; every prefix of every user, ~1-5 ks each)
    compare --compare=GRU4Rec,NARM,BERT4Rec --config_files=$converged --seeds=2 --probes=shuffle,similarity --report=False
    # the study's open questions, against its three-prefix row in bfloat16 (one seed):
    # users per epoch (199 users' samples, the same ones they have on every user, for 5 epochs = 150 steps),
    # history length 10 (the paper's) against 5, 6 prefixes per user against 3
    compare --compare="LLMSRec[train_samples=3,validations_per_epoch=1,llm_dtype=bfloat16,train_users=199]" --config_files=$study --probes=shuffle,similarity --epochs=5 $row_flags
    compare --compare="LLMSRec[$prefixes,llm_dtype=bfloat16,history_length=10]" --config_files=$study --probes=shuffle,similarity --epochs=1 $row_flags
    compare --compare="LLMSRec[train_samples=6,validations_per_epoch=12,llm_dtype=bfloat16]" --config_files=$study --probes=shuffle,similarity --epochs=1 $row_flags
    ;;
*)
    echo "usage: bash benchmarks/cpu_ml100k.sh lora|study" >&2
    exit 2
    ;;
esac
