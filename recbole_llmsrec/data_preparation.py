"""Dataloaders for LLM-SRec: RecBole's split, samplers and evaluation, one training sample per user."""

from __future__ import annotations

import copy

import numpy as np
from recbole.data import data_preparation as recbole_data_preparation
from recbole.data.utils import create_samplers, get_dataloader
from recbole.utils import ModelType

from recbole_llmsrec.utils import get_model

TRAIN_SAMPLE_MODES = ("last", "all", "a positive number of prefixes per user")


def last_prefix_per_user(train_dataset):
    """The training split reduced to each user's longest prefix: the last training item is the target.

    RecBole's sequential datasets hold every prefix of every user (``u, <i1> | i2``,
    ``u, <i1, i2> | i3``, ...), in time order within a user; this keeps one row per user.
    """
    users = train_dataset.inter_feat[train_dataset.uid_field].numpy()
    _, first_from_end = np.unique(users[::-1], return_index=True)
    last_rows = np.sort(len(users) - 1 - first_from_end)
    return train_dataset.copy(train_dataset.inter_feat[last_rows])


def sampled_prefixes_per_user(train_dataset, prefixes: int, seed: int):
    """Each user's longest prefix plus up to ``prefixes - 1`` other prefixes drawn once with ``seed``.

    With one sample per user a small dataset offers only a few hundred distinct targets;
    earlier prefixes add other targets of the same users at the same cost per sample.
    """
    users = train_dataset.inter_feat[train_dataset.uid_field].numpy()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(users))  # a seeded random rank of each row
    is_last = np.r_[users[1:] != users[:-1], True]  # rows are in time order within a user
    # sort by user, the last prefix first, then by the random rank; keep the first `prefixes` rows per user
    ranked = np.lexsort((order, ~is_last, users))
    first_of_user = np.r_[0, np.flatnonzero(users[ranked][1:] != users[ranked][:-1]) + 1]
    position = np.arange(len(ranked)) - np.repeat(first_of_user, np.diff(np.r_[first_of_user, len(ranked)]))
    return train_dataset.copy(train_dataset.inter_feat[np.sort(ranked[position < prefixes])])


def user_subset(split, users: int | None, seed: int, key: str):
    """``split`` restricted to ``users`` of its users drawn once with ``seed`` (all when None or more).

    ``key`` names the config key in the error for a bad value.
    """
    if users is None:
        return split
    if isinstance(users, bool) or not isinstance(users, int) or users < 1:
        raise ValueError(f"{key}={users!r} is neither ~ (every user) nor a positive number of users.")
    all_users = np.unique(split.inter_feat[split.uid_field].numpy())
    if users >= len(all_users):
        return split
    chosen = np.random.default_rng(seed).choice(all_users, size=users, replace=False)
    rows = np.isin(split.inter_feat[split.uid_field].numpy(), chosen)
    return split.copy(split.inter_feat[np.flatnonzero(rows)])


def training_samples(config, train_dataset):
    """The training split as ``train_samples`` and ``train_users`` ask.

    ``train_samples`` keeps ``last``, ``all`` or k prefixes per user; ``train_users`` then keeps
    a fixed, seeded subset of the users (every user when unset), with the very samples they
    have in a run on every user.
    """
    mode = config["train_samples"] or "all"
    if mode == "last":
        samples = last_prefix_per_user(train_dataset)
    elif isinstance(mode, int) and not isinstance(mode, bool) and mode >= 1:
        samples = sampled_prefixes_per_user(train_dataset, mode, config["seed"])
    elif mode == "all":
        samples = train_dataset
    else:
        raise ValueError(f"train_samples={mode!r} is not one of: {', '.join(TRAIN_SAMPLE_MODES)}.")
    return user_subset(samples, config["train_users"], config["seed"], "train_users")


def single_process_view(config):
    """``config`` as one process sees it: a dataloader built from it reads every row, unsharded."""
    view = copy.copy(config)
    view.final_config_dict = dict(config.final_config_dict, single_spec=True)
    return view


def build_dataloaders(config, dataset, splits: list) -> tuple:
    """Train, valid and test dataloaders over already built splits (``dataset.build()`` runs once only).

    ``train_samples: last`` keeps one training sample per user, an integer k that many
    prefixes per user, ``all`` (RecBole's default) every prefix; ``train_users`` trains on a
    fixed, seeded subset of users. ``valid_users`` validates on a fixed, seeded subset of
    users; test reads every user. Samplers always see the full training split, so sampled
    evaluation negatives exclude every training item of the user.

    In a distributed run, valid and test are sharded by user (RecBole's distributed sampler);
    so is training, except for models that split each global batch themselves
    (``reads_global_batch``, LLMSRec): every rank then reads the single process's batches.
    """
    train_dataset = training_samples(config, splits[0])
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, splits)
    valid_dataset = user_subset(splits[1], config["valid_users"], config["seed"], "valid_users")
    reads_global_batch = getattr(get_model(config["model"]), "reads_global_batch", False)
    train_config = single_process_view(config) if reads_global_batch else config
    train_data = get_dataloader(config, "train")(train_config, train_dataset, train_sampler, shuffle=config["shuffle"])
    valid_data = get_dataloader(config, "valid")(config, valid_dataset, valid_sampler, shuffle=False)
    test_data = get_dataloader(config, "test")(config, splits[2], test_sampler, shuffle=False)
    return train_data, valid_data, test_data


def data_preparation(config, dataset) -> tuple:
    """RecBole's ``data_preparation`` with the ``train_users`` and ``train_samples`` options; returns (train, valid, test)."""
    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        return recbole_data_preparation(config, dataset)
    return build_dataloaders(config, dataset, dataset.build())
