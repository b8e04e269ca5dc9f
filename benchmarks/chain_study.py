"""Convergence study on the order-determined synthetic dataset, with the tests' tiny random LLaMA.

Each next item is a function of the previous one (``recbole_llmsrec.data.synthetic``), so the
teacher SASRec reaches a perfect score and Pop stays at chance (with ``--jump 0.5``, half the
steps jump to a random item and the teacher's ceiling is lower). A grid of LLMSRec settings
(learning rate, distillation reduction, teacher dropout, and the no-distillation ablation)
and the two ablations trains for the same number of steps through ``--compare``; the table
reports test uni100 NDCG@10 beside the teacher and Pop and, from the learning curve, the last
validation score, the last mean cos(u, teacher) and the last uniformity term (whether
distillation takes hold) and the similarity probe's cosine between each user's vector from
the original and the shuffled history (whether order matters to it) beside its floor, the cosine
between different users' vectors (whether the model tells users apart at all), each as the mean
over seeds.

    python benchmarks/chain_study.py --out benchmarks/results/chain_study.md
    # one setting, longer, with the pretrained SmolLM2-135M instead of the tiny random LLaMA
    python benchmarks/chain_study.py --llm smollm2 --epochs 20 --seeds 1 --only 8 \
        --out benchmarks/results/chain_study_smollm2.md
    # the same LLM shape with random weights: what pre-training contributes
    python benchmarks/chain_study.py --llm smollm2 --random-weights --epochs 20 --seeds 1 --only 8 \
        --out benchmarks/results/chain_study_smollm2_random.md
    # the LoRA baselines beside LLMSRec (cos(u, teacher) and uniformity: LLMSRec only)
    python benchmarks/chain_study.py --jump 0.5 --specs 'LLMSRec[learning_rate=0.001]' \
        'TALLRec[learning_rate=0.001]' 'LLaRA[learning_rate=0.001]' 'CoLLM[learning_rate=0.001]' \
        --out benchmarks/results/chain_study_jump_lora.md
    # a LoRA baseline with the pretrained SmolLM2-135M on the jumping walks (2 torch threads)
    python benchmarks/chain_study.py --llm smollm2 --epochs 10 --seeds 1 --jump 0.5 --threads 2 \
        --specs 'LLaRA[learning_rate=0.001]' --out benchmarks/results/chain_study_jump_smollm2_llara.md
    # chosen settings only, with random jumps: only the last item predicts the next
    python benchmarks/chain_study.py --jump 0.5 --specs 'LLMSRec[learning_rate=0.001]' \
        'LLMSRec[learning_rate=0.001,distill_reduction=sum]' --out benchmarks/results/chain_study_jump.md

Seconds per run are wall time on whatever else the machine runs: compare them only within a run.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import build_tiny_llm  # noqa: E402  (the tests' tiny random LLaMA and tokenizer)

from recbole_llmsrec.compare import run_comparison  # noqa: E402
from recbole_llmsrec.data.synthetic import write_chain_dataset  # noqa: E402

LLM_NAMES = {"tiny": "tiny random LLaMA", "smollm2": "pretrained SmolLM2-135M-Instruct"}
LEARNING_RATES = (1e-4, 3e-4, 1e-3)
REDUCTIONS = ("mean", "sum")
TEACHER_DROPOUT = (True, False)


def profile(folder: Path, llm: Path | None, epochs: int) -> dict:
    return {
        "data_path": str(folder / "data"), "checkpoint_dir": str(folder / "saved"), "show_progress": False,
        "state": "ERROR", "seed": 2020, "dataset": "chain", "MAX_ITEM_LIST_LENGTH": 10, "prompt_dates": False,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "title"]},
        "llm_path": str(llm) if llm else None, "history_length": 4, "head_hidden_size": 64, "projection_size": 32,
        "llm_tokens_per_pass": 512, "train_batch_size": 10, "epochs": epochs, "validations_per_epoch": 2,
        "stopping_step": 100,  # a fixed budget: every run takes the same number of steps
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "uni100"},
        "teacher_config": {"hidden_size": 32, "inner_size": 64, "n_layers": 1, "epochs": 30, "learning_rate": 0.01,
                           "train_batch_size": 64},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6, help="epochs of 15 steps each")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per run (2020, 2021, ...)")
    parser.add_argument("--llm", choices=("tiny", "smollm2"), default="tiny",
                        help="the tests' tiny random LLaMA, or the pretrained SmolLM2-135M (offline default)")
    parser.add_argument("--only", type=int, nargs="*", help="run only these rows of the grid (0-based)")
    parser.add_argument("--random-weights", action="store_true", help="the LLM's shape with random weights")
    parser.add_argument("--specs", nargs="*", help="run these --compare specs instead of the grid")
    parser.add_argument("--jump", type=float, default=0.0,
                        help="probability that a step jumps to a random item: > 0 makes only the last item predictive")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/chain_study.md"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (seconds compare only at equal threads)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    specs = [f"LLMSRec[learning_rate={lr},distill_reduction={reduction},teacher_dropout={dropout}]"
             for lr, reduction, dropout in itertools.product(LEARNING_RATES, REDUCTIONS, TEACHER_DROPOUT)]
    specs += [f"LLMSRec[learning_rate={LEARNING_RATES[-1]},uniform_weight=0]",
              f"LLMSRec[learning_rate={LEARNING_RATES[-1]},distill_weight=0,uniform_weight=0]"]
    if args.only is not None:
        specs = [specs[i] for i in args.only]
    if args.specs:
        specs = args.specs
    lines = [
        f"# Convergence on the order-determined synthetic dataset ({LLM_NAMES[args.llm]}"
        f"{', random weights' if args.random_weights else ''})", "",
        f"Command: `python {' '.join(sys.argv)}`. 150 users walking "
        f"one cycle of 60 items{f', jumping to a random item with probability {args.jump} per step' if args.jump else ''}, "
        f"4 history items per prompt, batch 10, {args.epochs} epochs = {15 * args.epochs} steps, "
        "2 validations per epoch, no early stopping; test in 1 target + 99 sampled negatives. "
        f"Mean over {args.seeds} seeds (each seed its own teacher); seconds: all seeds.", "",
        "cos(orig, shuffled): mean cosine between each test user's vector from the original and from the "
        "shuffled history (the similarity probe; the teacher SASRec's in brackets); other users: mean cosine "
        "between different users' vectors, the floor of the former.", "",
        "| run | test NDCG@10 | teacher | Pop | last valid NDCG@10 | last cos(u, teacher) | last uniformity "
        "| cos(orig, shuffled) | other users | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_chain_dataset(folder / "data", n_items=60, n_users=150, titles=True, jump_probability=args.jump)
        llm = build_tiny_llm(folder / "llm") if args.llm == "tiny" else None
        config_file = folder / "chain-study.yaml"
        config_file.write_text(yaml.safe_dump({**profile(folder, llm, args.epochs),
                                               "llm_random_weights": args.random_weights}))
        runs = lambda spec: run_comparison(  # noqa: E731
            spec, config_files=[str(config_file)], seeds=args.seeds, results_dir=folder / "results",
            probe_names=["similarity"])["results"][spec]
        pop_score = np.mean([r["metrics"]["test uni100"]["ndcg@10"] for r in runs("Pop")])
        teachers = runs("SASRec")  # the teacher of every LLMSRec and LLaRA row (same config, same checkpoint)
        teacher_score = np.mean([r["metrics"]["test uni100"]["ndcg@10"] for r in teachers])
        teacher_similarity = np.mean([r["probes"]["similarity"]["mean"] for r in teachers])
        for spec in specs:
            start = time.perf_counter()
            results = runs(spec)

            def mean(value, digits: int = 3) -> str:
                values = [value(r) for r in results]
                return "—" if None in values else f"{np.mean(values):.{digits}f}"

            lines.append(
                f"| `{spec}` | {mean(lambda r: r['metrics']['test uni100']['ndcg@10'], 4)} | "
                f"{teacher_score:.4f} | {pop_score:.4f} | "
                f"{mean(lambda r: r['curve'][-1]['valid']['ndcg@10'], 4)} | "
                f"{mean(lambda r: r['curve'][-1]['distill_cosine'])} | "
                f"{mean(lambda r: r['curve'][-1]['losses'].get('uniformity'))} | "
                f"{mean(lambda r: r['probes']['similarity']['mean'])} "
                f"({teacher_similarity:.3f}) | {mean(lambda r: r['probes']['similarity'].get('other_users'))} | "
                f"{time.perf_counter() - start:.0f} |"
            )
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
