"""Dataloaders for LLM-SRec: RecBole's split, samplers and evaluation, one training sample per user."""

from __future__ import annotations

import numpy as np
from recbole.data import data_preparation as recbole_data_preparation
from recbole.data.utils import create_samplers, get_dataloader
from recbole.utils import ModelType

TRAIN_SAMPLE_MODES = ("last", "all")


def last_prefix_per_user(train_dataset):
    """The training split reduced to each user's longest prefix: the last training item is the target.

    RecBole's sequential datasets hold every prefix of every user (``u, <i1> | i2``,
    ``u, <i1, i2> | i3``, ...), in time order within a user; this keeps one row per user.
    """
    users = train_dataset.inter_feat[train_dataset.uid_field].numpy()
    _, first_from_end = np.unique(users[::-1], return_index=True)
    last_rows = np.sort(len(users) - 1 - first_from_end)
    return train_dataset.copy(train_dataset.inter_feat[last_rows])


def build_dataloaders(config, dataset, splits: list) -> tuple:
    """Train, valid and test dataloaders over already built splits (``dataset.build()`` runs once only).

    ``train_samples: last`` keeps one training sample per user; ``all`` (RecBole's
    default) every prefix. Samplers always see the full training split, so sampled
    evaluation negatives exclude every training item of the user.
    """
    mode = config["train_samples"] or "all"
    if mode not in TRAIN_SAMPLE_MODES:
        raise ValueError(f"train_samples={mode!r} is not one of {TRAIN_SAMPLE_MODES}.")
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, splits)
    train_dataset = last_prefix_per_user(splits[0]) if mode == "last" else splits[0]
    train_data = get_dataloader(config, "train")(config, train_dataset, train_sampler, shuffle=config["shuffle"])
    valid_data = get_dataloader(config, "valid")(config, splits[1], valid_sampler, shuffle=False)
    test_data = get_dataloader(config, "test")(config, splits[2], test_sampler, shuffle=False)
    return train_data, valid_data, test_data


def data_preparation(config, dataset) -> tuple:
    """RecBole's ``data_preparation`` with the ``train_samples`` option; returns (train, valid, test)."""
    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        return recbole_data_preparation(config, dataset)
    return build_dataloaders(config, dataset, dataset.build())
