#!/usr/bin/env bash
# The CPU study of results/README.md that is still to run, as two queues of resumable runs on
# ml-100k with SmolLM2-135M in bfloat16 (~2.5x faster than float32 on a CPU with native bf16;
# benchmarks/RESULTS.md, "CPU rerun"), one torch thread each, so that both fit on 2 cores:
#
#   bash benchmarks/cpu_ml100k.sh lora    # the converged comparison (profile ml-100k-converged-bf16):
#                                         # SASRec, Pop, LLMSRec, then TALLRec and LLaRA, on 2 seeds;
#                                         # then the training-time shuffle of every row, then CoLLM
#   bash benchmarks/cpu_ml100k.sh study   # the ablations, LLMSRec-randomLLM and the CF baselines on the
#                                         # same profile (2 seeds), then the convergence study's open
#                                         # questions (issue "LLMSRec must learn")
#
# On a CPU without native bfloat16 (AVX512-BF16 or AMX), where it is emulated ~50x slower, the
# queues refuse to start; DTYPE=float32 runs the same rows in float32 (profile ml-100k-converged,
# labels without llm_dtype), each ~2x longer than in bfloat16 on a CPU that has it (on an AVX2-only
# AMD EPYC alone with THREADS=2: ~19 s a step, ~9.5 min a validation round of an LLMSRec-size row).
#
# Run them side by side, never two of the same queue. Every run stores its result under
# results/ml-100k/ and --compare reuses stored rows and continues an interrupted training from
# its last validation, so a rerun of a queue picks up where the last one stopped, on the same
# machine: the resume state lives in saved/, which a fresh clone does not have. Where machines
# last a few hours, only a row whose training ends inside them is kept: an LLMSRec-size row takes
# 1.6-2.8 h in bfloat16 (one thread, beside the other queue; by CPU), ~1.7 h alone with two threads,
# a LoRA row more; run the lora queue alone with two threads (THREADS=2 bash benchmarks/cpu_ml100k.sh lora)
# to shorten its rows (results/README.md, "Not done").
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
compare() { "$python" run_recbole_llmsrec.py --show_progress=False "$@"; }
if [[ "${1:-}" != lora && "${1:-}" != study ]]; then
    echo "usage: [DTYPE=float32] [THREADS=2] bash benchmarks/cpu_ml100k.sh lora|study" >&2
    exit 2
fi
converged=properties/quick_start/ml-100k-converged.yaml
study=properties/quick_start/ml-100k-study.yaml
prefixes=train_samples=3,validations_per_epoch=6   # the study's three prefixes per user, one validation every ~24 steps
# The LLM rows' dtype: bfloat16, refused where the CPU only emulates it, or DTYPE=float32
case "${DTYPE:-bfloat16}" in
bfloat16)
    if ! "$python" -c 'import sys, torch; from recbole_llmsrec.llm import cpu_computes_natively; sys.exit(not cpu_computes_natively(torch.bfloat16))'; then
        echo "This CPU has no native bfloat16 (AVX512-BF16 or AMX): rerun with DTYPE=float32 for the float32 rows." >&2
        exit 1
    fi
    llm_profile="$converged properties/quick_start/ml-100k-converged-bf16.yaml"   # the converged profile in bfloat16 (ml-100k-converged-bf16)
    dtype_key=",llm_dtype=bfloat16" ;;
float32)
    llm_profile=$converged
    dtype_key="" ;;
*)
    echo "DTYPE=${DTYPE} is neither bfloat16 nor float32." >&2
    exit 2 ;;
esac

case "${1:-}" in
lora)
    # LLMSRec on 2 seeds first (~50 min each in bfloat16), then the LoRA baselines (~3 h each)
    compare --compare=SASRec,Pop,LLMSRec --config_files="$llm_profile" --seeds=2 --probes=shuffle,similarity
    compare --compare=SASRec,Pop,LLMSRec,TALLRec,LLaRA --config_files="$llm_profile" --seeds=2 --probes=shuffle,similarity
    compare --compare=SASRec,Pop,LLMSRec,TALLRec,LLaRA --config_files="$llm_profile" --seeds=2 --probes=shuffle,similarity,train_shuffle
    compare --compare=SASRec,Pop,LLMSRec,TALLRec,LLaRA,CoLLM --config_files="$llm_profile" --seeds=2 --probes=shuffle,similarity,train_shuffle
    ;;
study)
    # --report=False: each run only stores its rows; the profiles' combined reports are written by
    # the lora queue and by the commands in results/README.md ("Not done")
    # No gradient checkpointing: it made a bf16 LLMSRec round 1.43x slower (608 s against 426 s of
    # training, 24 steps, one thread beside another run; AMD EPYC, 2026-12-06), and two such rows
    # without it fit in 24 GB (LLMSRec-randomLLM's peak RSS without it: 6.4 GB).
    row_flags="--report=False"
    # the ablations and the random-weight LLM, then the CF baselines (issue "LLMSRec must learn", item 6)
    compare --compare=LLMSRec-noU,LLMSRec-noDU,LLMSRec-randomLLM --config_files="$llm_profile" --seeds=2 --probes=shuffle,similarity $row_flags
    # (no LLM: in the float32 profile, beside its LLMSRec rows; every prefix of every user, ~1-5 ks each,
    # and as long again for the training-time shuffle)
    compare --compare=GRU4Rec,NARM,BERT4Rec --config_files=$converged --seeds=2 --probes=shuffle,similarity,train_shuffle --report=False
    # the study's open questions, against its three-prefix row in the same dtype (one seed):
    # users per epoch (199 users' samples, the same ones they have on every user, for 5 epochs = 150 steps),
    # history length 10 (the paper's) against 5, 6 prefixes per user against 3
    compare --compare="LLMSRec[train_samples=3,validations_per_epoch=1,train_users=199${dtype_key}]" --config_files=$study --probes=shuffle,similarity --epochs=5 $row_flags
    compare --compare="LLMSRec[$prefixes,history_length=10${dtype_key}]" --config_files=$study --probes=shuffle,similarity --epochs=1 $row_flags
    compare --compare="LLMSRec[train_samples=6,validations_per_epoch=12${dtype_key}]" --config_files=$study --probes=shuffle,similarity --epochs=1 $row_flags
    ;;
esac
