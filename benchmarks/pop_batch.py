"""RecBole's Pop and its training batch size: why every Pop row of the plugin trains at batch 128.

RecBole 1.2.1's ``Pop.calculate_loss`` adds one to ``item_cnt[item]`` with an indexed
assignment, so an item counts at most once per training batch (and the sampled negatives of the
pointwise dataloader count as well). The larger the batch, the further its counts are from the
item's real number of training interactions. This measures the effect on ml-100k, on the data,
split and evaluation of a plugin profile, against the exact counts. Writes
benchmarks/results/pop_batch.md.

    python benchmarks/pop_batch.py [--profiles PROFILE.yaml ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import recbole_llmsrec  # noqa: F401  (compatibility layer)
from recbole_llmsrec.config import Config
from recbole_llmsrec.data_preparation import build_dataloaders
from recbole_llmsrec.quick_start import COMPARISON_METRICS, fit_popularity

BATCH_SIZES = (128, 2048, 100_000)


def pop_rows(profile: str) -> list[dict]:
    """Test metrics (full ranking) of RecBole's Pop trained at each of :data:`BATCH_SIZES`, and of exact counts."""
    llm_config = Config("LLMSRec", config_file_list=[profile], config_dict={"show_progress": False, "state": "ERROR"})
    rows = []
    for batch_size in BATCH_SIZES:
        config, dataset, splits, trainer = fit_popularity(llm_config, {"train_batch_size": batch_size})
        test_data = build_dataloaders(config, dataset, splits)[2]
        model = trainer.model
        exact = torch.bincount(splits[0].inter_feat[config["ITEM_ID_FIELD"]], minlength=model.n_items)  # [n_items]
        counted = model.item_cnt.view(-1).float()
        correlation = torch.corrcoef(torch.stack([counted, exact.float()]))[0, 1].item()
        rows.append({"counts": f"RecBole Pop, batch {batch_size}", "total": int(counted.sum()), "correlation": correlation,
                     **trainer.evaluate(test_data, load_best_model=False)})
        if batch_size == BATCH_SIZES[-1]:
            model.item_cnt, model.max_cnt = exact.view(-1, 1).to(model.item_cnt), exact.max()
            rows.append({"counts": "exact training counts", "total": int(exact.sum()), "correlation": 1.0,
                         **trainer.evaluate(test_data, load_best_model=False)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["properties/quick_start/ml-100k.yaml",
                                                          "properties/quick_start/ml-100k-study.yaml"])
    parser.add_argument("--out", default="benchmarks/results/pop_batch.md")
    args = parser.parse_args()
    lines = ["# RecBole's Pop and its training batch size", "",
             f"Command: `python benchmarks/pop_batch.py --profiles {' '.join(args.profiles)}`. Test set, full ranking.", ""]
    for profile in args.profiles:
        lines += [
            f"## `{profile}` (its data, split and evaluation)", "",
            "| counts | sum of counts | correlation with exact counts | " + " | ".join(f"{m}" for m in COMPARISON_METRICS) + " |",
            "|---|---|---|" + "---|" * len(COMPARISON_METRICS),
        ]
        for row in pop_rows(profile):
            metrics = " | ".join(f"{float(row[m]):.4f}" for m in COMPARISON_METRICS)
            lines.append(f"| {row['counts']} | {row['total']} | {row['correlation']:.3f} | {metrics} |")
        lines.append("")
    lines.append("Every Pop row of `--compare` and of the quick start's table trains at the CF baselines' batch of 128.")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
