"""Teacher stage cost: RecBole's every-prefix training vs the plugin's per-user, every-position training.

Same model class (SASRec: d=64, 2 blocks, 1 head, dropout 0.1, CE loss), same data (ml-100k,
leave-last-out, time order) and evaluation. Writes benchmarks/results/teacher_epoch.md.

    python benchmarks/teacher_epoch.py [--prefix-epochs 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path
from time import time

import torch

import recbole_llmsrec  # noqa: F401  (compatibility layer)
from recbole.data import create_dataset
from recbole.data.utils import get_dataloader
from recbole.trainer import Trainer
from recbole.utils import init_seed

from recbole_llmsrec.config import Config
from recbole_llmsrec.data_preparation import build_dataloaders, last_prefix_per_user
from recbole_llmsrec.trainer import TeacherTrainer
from recbole_llmsrec.utils import get_model

SASREC = {"hidden_size": 64, "n_layers": 2, "n_heads": 1, "inner_size": 256, "hidden_dropout_prob": 0.1,
          "attn_dropout_prob": 0.1, "loss_type": "CE", "train_neg_sample_args": None, "metrics": ["NDCG", "Hit"],
          "topk": [10, 20], "valid_metric": "NDCG@10", "show_progress": False, "state": "ERROR",
          "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "stopping_step": 10,
          "checkpoint_dir": "saved/benchmarks"}


def run(trainer_class, epochs: int, per_user: bool, batch_size: int) -> dict:
    config = Config("SASRec", "ml-100k", config_dict={**SASREC, "epochs": epochs, "train_batch_size": batch_size})
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    splits = dataset.build()
    _, valid_data, test_data = build_dataloaders(config, dataset, splits)
    train_split = last_prefix_per_user(splits[0]) if per_user else splits[0]
    train_data = get_dataloader(config, "train")(config, train_split, None, shuffle=True)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model("SASRec")(config, splits[0])
    trainer = trainer_class(config, model)
    epoch_seconds: list[float] = []
    original = trainer._train_epoch

    def timed(*args, **kwargs):
        start = time()
        loss = original(*args, **kwargs)
        epoch_seconds.append(time() - start)
        return loss

    trainer._train_epoch = timed
    start = time()
    trainer.fit(train_data, valid_data, saved=True)
    total = time() - start
    test = trainer.evaluate(test_data, load_best_model=True)
    return {"sequences": len(train_split), "epochs": len(epoch_seconds),
            "epoch_s": sum(epoch_seconds) / len(epoch_seconds), "total_s": total, "test": dict(test)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prefix-epochs", type=int, default=1, help="epochs of RecBole's every-prefix trainer")
    parser.add_argument("--per-user-epochs", type=int, default=200, help="upper bound; early stopping ends sooner")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    per_user = run(TeacherTrainer, args.per_user_epochs, per_user=True, batch_size=128)
    prefix = run(Trainer, args.prefix_epochs, per_user=False, batch_size=2048)
    rows = [("RecBole every prefix (Trainer)", prefix), ("per user, every position (TeacherTrainer)", per_user)]
    lines = [
        "# Teacher stage: SASRec on ml-100k (all 943 users)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}.",
        f"Command: `python benchmarks/teacher_epoch.py --prefix-epochs {args.prefix_epochs} --threads {args.threads}`",
        "",
        "| training | sequences / epoch | epochs run | s / epoch | total s | test NDCG@10 (full) | test Hit@10 (full) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {r['sequences']} | {r['epochs']} | {r['epoch_s']:.1f} | {r['total_s']:.0f} | "
                     f"{r['test']['ndcg@10']:.4f} | {r['test']['hit@10']:.4f} |")
    lines += ["", f"Epoch time ratio: {prefix['epoch_s'] / per_user['epoch_s']:.0f}x."]
    out = Path(__file__).parent / "results" / "teacher_epoch.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
