"""Does a trained model rank items differently for different users, or one list for everybody?

The similarity probe's cosine between a user's vector from the original and the shuffled
history says little when every user's vector is nearly the same: it is then near 1 for any
change of the history. This reloads trained checkpoints (any of the plugin's models, or a
RecBole model such as the cached teacher) and measures, on their own test users:

- u pairwise: mean cosine between different users' vectors;
- user share: mean ||u_i - mean u||^2 / mean ||u_i||^2, the share of a vector that differs
  between users (0: one vector for everybody);
- top-10 overlap: mean share of the top-10 items two different users have in common, ranked by
  the model's raw scores (no history masking, so a popularity ranking scores 1.0);
- with Pop: mean share of a user's top-10 that is in the 10 most-interacted training items;
- distinct items: how many items appear in at least one user's top-10.

    python benchmarks/ranking_spread.py --checkpoints saved/LLaRA-*.safetensors saved/teacher-SASRec-*.safetensors \
        --out benchmarks/results/ranking_spread_ml100k.md

Seconds are wall time on whatever else the machine runs (an LLM checkpoint encodes its
catalogue and each distinct test history once: ``full_sort_predict``, which is what ranks,
reads the user vectors from the model's evaluation cache).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from distill_alignment import mean_off_diagonal  # benchmarks/ is the script's folder
from recbole_llmsrec import probes
from recbole_llmsrec.quick_start import load_data_and_model

TOP_K = 10
COLUMNS = ("u pairwise", "user share", "top-10 overlap", "with Pop", "distinct items")


@torch.no_grad()
def item_scores(model, split, batch_size: int = 256) -> torch.Tensor:
    """The model's raw scores ``[R, n_items]`` of every item for every row of a built split."""
    model.eval()
    scores = []
    for batch in probes.row_batches(model, split, batch_size):
        scores.append(model.full_sort_predict(batch).float().cpu())  # [B, n_items]
    scores = torch.cat(scores)
    scores[:, 0] = -torch.inf  # RecBole's padding item is never recommended
    return scores


def spread(vectors: torch.Tensor, scores: torch.Tensor, popularity: np.ndarray) -> dict[str, float]:
    """The measures of the module docstring from user vectors ``[R, d]`` and item scores ``[R, n_items]``."""
    normalized = F.normalize(vectors, dim=1)
    top = scores.topk(TOP_K, dim=1).indices  # [R, K]
    chosen = torch.zeros_like(scores).scatter_(1, top, 1.0)  # [R, n_items]: 1 where in a user's top-K
    popular = torch.from_numpy(np.argsort(-popularity, kind="stable")[:TOP_K])
    centered = vectors - vectors.mean(0, keepdim=True)
    return {
        "u pairwise": mean_off_diagonal(normalized @ normalized.T),
        "user share": float(centered.pow(2).sum(1).mean() / vectors.pow(2).sum(1).mean()),
        "top-10 overlap": mean_off_diagonal(chosen @ chosen.T) / TOP_K,
        "with Pop": float(chosen[:, popular].sum(1).mean()) / TOP_K,
        "distinct items": float((chosen.sum(0) > 0).sum()),
    }


def checkpoint_spread(checkpoint: Path) -> dict[str, float]:
    """The measures of one checkpoint on its own test split."""
    _, model, _, train_data, _, test_data = load_data_and_model(str(checkpoint))
    test_split = test_data.dataset
    popularity = probes.item_popularity(train_data.dataset)
    return spread(probes.user_vectors(model, test_split), item_scores(model, test_split), popularity)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, nargs="+", required=True, help="trained checkpoints to measure")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ranking_spread.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [
        "# One ranking for everybody? How much trained models' rankings differ between users", "",
        f"Command: `python {' '.join(sys.argv)}`. Each checkpoint on its own test users; raw scores, no history "
        "masking (so a popularity ranking has top-10 overlap 1.0).", "",
        "- u pairwise: mean cosine between different users' vectors; user share: mean ||u - mean u||^2 / mean "
        "||u||^2, the part of a vector that differs between users;",
        "- top-10 overlap: mean share of the top-10 two different users have in common; with Pop: mean share of "
        "a user's top-10 among the 10 most-interacted training items; distinct items: items in any user's top-10.",
        "",
        "| checkpoint | " + " | ".join(COLUMNS) + " | seconds |",
        "|---|" + "---|" * len(COLUMNS) + "---|",
    ]
    for checkpoint in args.checkpoints:
        start = time.perf_counter()
        measures = checkpoint_spread(checkpoint)
        cells = [f"{measures[name]:.0f}" if name == "distinct items" else f"{measures[name]:.3f}" for name in COLUMNS]
        lines.append(f"| `{checkpoint.name}` | " + " | ".join(cells) + f" | {time.perf_counter() - start:.0f} |")
        print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
