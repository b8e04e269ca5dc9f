"""Choose the teacher SASRec's default config on validation: the paper's against RecBole's defaults.

For each profile, trains the teacher stage (the plugin's per-position trainer, early-stopped on
validation) with each candidate ``teacher_config`` and writes validation and test NDCG@10 /
Hit@10 (full ranking) to a markdown table. The choice reads the validation columns only;
test is printed beside them for information.

    python benchmarks/teacher_choice.py --out benchmarks/results/teacher_choice.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from recbole.data import create_dataset
from recbole.utils import init_seed

import recbole_llmsrec  # noqa: F401  (compatibility layer)
from recbole_llmsrec.config import Config
from recbole_llmsrec.data_preparation import build_dataloaders
from recbole_llmsrec.teacher import train_teacher
from recbole_llmsrec.utils import properties_dir

PROFILES = ("ml-100k", "ml-100k-study")
CANDIDATES = {
    # the paper's SASRec (the plugin's default teacher_config)
    "paper: 1 head, dropout 0.1": {},
    # RecBole 1.2.1's SASRec.yaml defaults for the same width and depth
    "RecBole defaults: 2 heads, dropout 0.5": {"n_heads": 2, "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5},
}


def evaluate_candidate(profile: str, overrides: dict, checkpoint_dir: str) -> dict:
    files = [str(properties_dir() / "quick_start" / f"{profile}.yaml")]
    settings = {"checkpoint_dir": checkpoint_dir, "show_progress": False, "state": "ERROR", "teacher_config": overrides}
    config = Config(model="LLMSRec", config_file_list=files, config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    splits = dataset.build()
    _, valid_data, test_data = build_dataloaders(config, dataset, splits)
    start = time.perf_counter()
    _, outcome = train_teacher(config, splits, valid_data, test_data)
    return {"valid": outcome["valid"], "test": outcome["test"], "seconds": time.perf_counter() - start,
            "epochs": len(outcome.get("epoch_seconds", [])), "valid users": len(valid_data._dataset.inter_feat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/teacher_choice.md"))
    args = parser.parse_args()
    lines = ["# Teacher config chosen on validation", "",
             "Command: `python benchmarks/teacher_choice.py`. Full ranking, seed of the profile; the choice "
             "reads the valid columns only.", "",
             "| profile | candidate | valid users | epochs | valid NDCG@10 | valid Hit@10 | test NDCG@10 | test Hit@10 | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as checkpoint_dir:
        for profile in PROFILES:
            for name, overrides in CANDIDATES.items():
                r = evaluate_candidate(profile, overrides, checkpoint_dir)
                lines.append(f"| {profile} | {name} | {r['valid users']} | {r['epochs']} | {r['valid']['ndcg@10']:.4f} | "
                             f"{r['valid']['hit@10']:.4f} | {r['test']['ndcg@10']:.4f} | {r['test']['hit@10']:.4f} | "
                             f"{r['seconds']:.0f} |")
                print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
