"""Building blocks for tests: config, data and a ready LLMSRec on the tiny dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from recbole.data import create_dataset
from recbole.utils import init_seed

from recbole_llmsrec.config import Config
from recbole_llmsrec.data_preparation import build_dataloaders
from recbole_llmsrec.teacher import train_teacher
from recbole_llmsrec.utils import get_model


def build_llmsrec(settings: dict, **overrides):
    """Config, loaders and an LLMSRec (teacher trained or reused) on the tiny dataset."""
    config = Config(model="LLMSRec", dataset="tiny", config_dict={**settings, **overrides})
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    splits = dataset.build()
    train_data, valid_data, test_data = build_dataloaders(config, dataset, splits)
    if not config["teacher_checkpoint"]:
        path, _ = train_teacher(config, splits, valid_data, test_data)
        config["teacher_checkpoint"] = str(path)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model("LLMSRec")(config, splits[0])
    return config, model, (train_data, valid_data, test_data)


def write_chain_dataset(folder: Path, n_items: int = 100, n_users: int = 120, length: int = 10, titles: bool = False) -> None:
    """Users walk a fixed random cycle over the items: the next item is a function of the previous one.

    ``titles`` also writes ``chain.item`` with a title per item (two random words and the id).
    """
    rng = np.random.default_rng(0)
    cycle = rng.permutation(n_items) + 1
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(n_users):
        start = rng.integers(n_items)
        lines += [f"u{user}\ti{cycle[(start + k) % n_items]}\t{1000 * user + k}" for k in range(length)]
    (folder / "chain").mkdir(parents=True)
    (folder / "chain" / "chain.inter").write_text("\n".join(lines) + "\n")
    if titles:
        words = ["Red", "Blue", "Star", "River", "Night", "City", "Iron", "Garden", "Lost", "Ocean", "Silent", "Winter"]
        rows = [f"i{item}\t{rng.choice(words)} {rng.choice(words)} {item}" for item in range(1, n_items + 1)]
        (folder / "chain" / "chain.item").write_text("item_id:token\ttitle:token_seq\n" + "\n".join(rows) + "\n")
