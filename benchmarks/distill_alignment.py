"""What does distillation transfer? The LLM user vector against its own and other users' targets.

LLMSRec's distillation pulls each user's normalised LLM vector ``u`` towards the normalised,
projected teacher vector ``z = f_cf_user(O_u)``. A high mean cos(u, z) alone does not say that
``u`` learned anything *about that user*: the cosine also rises when ``u`` and ``z`` share a
direction common to every user. This trains LLMSRec settings (the authors' MSE, ``sum``, a
fixed ``f_cf_user``, no distillation, ``distill_loss: contrastive``, and both losses with the
diagnostic readout at the last ``[HistoryEmb]`` slot) on the jumping-walk synthetic data of
``chain_study.py`` (only the last item predicts the next), reloads each checkpoint and
measures, on the test users:

- cos(u, own z) and cos(u, other users' z): the user-specific part of the alignment is the gap;
- how often a user's own ``z`` is the nearest to its ``u`` among all users' (chance: 1 / users);
- the mean pairwise cosine among the ``z`` and among the ``u`` (the shared direction);
- order: cos(z, z shuffled) and cos(u, u shuffled), and cos(u - u shuffled, z - z shuffled),
  whether ``u`` moves the way its target moves when the history is shuffled.

    python benchmarks/distill_alignment.py --out benchmarks/results/distill_alignment.md
    # checkpoints trained elsewhere (e.g. by --compare on ml-100k), each on its own test users
    python benchmarks/distill_alignment.py --checkpoints saved/LLMSRec-*.safetensors \
        --out benchmarks/results/distill_alignment_ml100k.md

Each setting trains for the chain study's budget (6 epochs of 15 steps) with the tests' tiny
random LLaMA; seconds are wall time on whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from chain_study import profile  # noqa: E402  (benchmarks/ is the script's folder)
from conftest import build_tiny_llm  # noqa: E402

from recbole_llmsrec import probes  # noqa: E402
from recbole_llmsrec.compare import run_comparison  # noqa: E402
from recbole_llmsrec.data.synthetic import write_chain_dataset  # noqa: E402
from recbole_llmsrec.quick_start import load_data_and_model  # noqa: E402

SPECS = (
    "LLMSRec[learning_rate=0.001]",
    "LLMSRec[learning_rate=0.001,distill_reduction=sum]",
    "LLMSRec[learning_rate=0.001,distill_reduction=sum,cf_user_head_trainable=False]",
    "LLMSRec[learning_rate=0.001,distill_weight=0,uniform_weight=0]",
    "LLMSRec[learning_rate=0.001,distill_loss=contrastive]",
    "LLMSRec[learning_rate=0.001,distill_loss=contrastive,distill_weight=10]",
    # the diagnostic readout at the last [HistoryEmb] slot: what the same losses do where the order is readable
    "LLMSRec[learning_rate=0.001,user_readout=last_history]",
    "LLMSRec[learning_rate=0.001,distill_loss=contrastive,user_readout=last_history]",
)


@torch.no_grad()
def distillation_targets(model, split, batch_size: int = 256) -> torch.Tensor:
    """``z = f_cf_user(O_u)`` ``[R, d']`` for every row of a built split, the teacher in eval mode."""
    model.eval()
    targets = []
    for batch in probes.row_batches(model, split, batch_size):
        teacher_users = model.teacher(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])  # [B, d_cf]
        targets.append(model.cf_user_head(teacher_users))  # [B, d']
    return torch.cat(targets).float().cpu()


def mean_off_diagonal(similarity: torch.Tensor) -> float:
    """Mean of a square matrix's off-diagonal entries."""
    n = similarity.shape[0]
    return float((similarity.sum() - similarity.diagonal().sum()) / (n * n - n))


def alignment(model, split, shuffled_split) -> dict[str, float]:
    """The measures of the module docstring on one split and its shuffled copy."""
    with torch.no_grad():
        users = F.normalize(probes.user_vectors(model, split), dim=1)  # [R, d']
        users_shuffled = F.normalize(probes.user_vectors(model, shuffled_split), dim=1)  # [R, d']
    targets = F.normalize(distillation_targets(model, split), dim=1)  # [R, d']
    targets_shuffled = F.normalize(distillation_targets(model, shuffled_split), dim=1)  # [R, d']
    cross = users @ targets.T  # [R, R]: cos(u_i, z_j)
    moved = F.cosine_similarity(users - users_shuffled, targets - targets_shuffled, dim=1)  # [R]
    return {
        "own": float(cross.diagonal().mean()),
        "other": mean_off_diagonal(cross),
        "own nearest": float((cross.argmax(1) == torch.arange(len(cross))).float().mean()),
        "chance": 1 / len(cross),
        "z pairwise": mean_off_diagonal(targets @ targets.T),
        "u pairwise": mean_off_diagonal(users @ users.T),
        "z order": float(F.cosine_similarity(targets, targets_shuffled, dim=1).mean()),
        "u order": float(F.cosine_similarity(users, users_shuffled, dim=1).mean()),
        "moves with z": float(moved.nan_to_num().mean()),
    }


def checkpoint_alignment(checkpoint: Path) -> dict[str, float]:
    """The measures of an LLMSRec checkpoint on its own test split, shuffled as the probes do."""
    config, model, _, _, _, test_data = load_data_and_model(str(checkpoint))
    test_split = test_data.dataset
    shuffled = probes.shuffle_histories(test_split, config["seed"], window=model.history_length)
    return alignment(model, test_split, shuffled)


COLUMNS = ("own", "other", "own nearest", "z pairwise", "u pairwise", "z order", "u order", "moves with z")


def table_row(label: str, scores: list[float], measures: list[dict[str, float]], seconds: float) -> str:
    """One Markdown row: the mean test score and the mean of each measure over seeds."""
    mean = {name: np.mean([m[name] for m in measures]) for name in (*COLUMNS, "chance")}
    cells = [f"{mean[name]:.3f}" + (f" ({mean['chance']:.3f})" if name == "own nearest" else "") for name in COLUMNS]
    score = f"{np.mean(scores):.4f}" if scores else "—"
    return f"| {label} | {score} | " + " | ".join(cells) + f" | {seconds:.0f} |"


def synthetic_rows(seeds: int, jump: float) -> list[str]:
    """Train each of ``SPECS`` on the jumping walks for ``seeds`` seeds; one row per spec."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_chain_dataset(folder / "data", n_items=60, n_users=150, titles=True, jump_probability=jump)
        settings = profile(folder, build_tiny_llm(folder / "llm"), epochs=6)
        for seed in range(2020, 2020 + seeds):
            (folder / f"seed{seed}.yaml").write_text(yaml.safe_dump({**settings, "seed": seed}))
        for spec in SPECS:
            start = time.perf_counter()
            scores, measures = [], []
            for seed in range(2020, 2020 + seeds):
                result = run_comparison(spec, config_files=[str(folder / f"seed{seed}.yaml")],
                                        results_dir=folder / "results")["results"][spec][0]
                scores.append(result["metrics"]["test uni100"]["ndcg@10"])
                checkpoint = max((folder / "saved").glob("LLMSRec-*.safetensors"), key=lambda p: p.stat().st_mtime)
                measures.append(checkpoint_alignment(checkpoint))
            rows.append(table_row(f"`{spec}`", scores, measures, time.perf_counter() - start))
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2, help="seeds per setting (2020, 2021, ...)")
    parser.add_argument("--jump", type=float, default=0.5, help="probability that a step jumps to a random item")
    parser.add_argument("--checkpoints", type=Path, nargs="*",
                        help="measure these trained LLMSRec checkpoints (on their own data) instead of the synthetic grid")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/distill_alignment.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    setting = (
        "The checkpoints' own test users (one seed each)" if args.checkpoints else
        f"Jumping walks (jump probability {args.jump}), the tests' tiny random LLaMA, 90 steps at lr 1e-3; "
        f"test users; mean over {args.seeds} seeds"
    )
    lines = [
        "# What distillation transfers: the LLM user vector against its own and other users' targets", "",
        f"Command: `python {' '.join(sys.argv)}`. {setting}. `u`: the normalised LLM user vector; `z`: the "
        "normalised projected teacher vector (the distillation target), teacher in eval mode.", "",
        "- own / other: mean cos(u_i, z_i) / mean cos(u_i, z_j), j != i; own nearest: share of users whose own z "
        "is the nearest to u among all test users' (chance in brackets);",
        "- z pairwise / u pairwise: mean cosine between different users' vectors (the direction they share);",
        "- z order / u order: mean cos(original, shuffled history); moves with z: mean cos(u - u_shuffled, "
        "z - z_shuffled), whether u moves the way its target does.", "",
        "| run | test NDCG@10 | " + " | ".join(COLUMNS) + " | seconds |",
        "|---|---|" + "---|" * len(COLUMNS) + "---|",
    ]
    if args.checkpoints:
        for checkpoint in args.checkpoints:
            start = time.perf_counter()
            lines.append(table_row(f"`{checkpoint.name}`", [], [checkpoint_alignment(checkpoint)],
                                   time.perf_counter() - start))
            print(lines[-1], flush=True)
    else:
        lines += synthetic_rows(args.seeds, args.jump)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
