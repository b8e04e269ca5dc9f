"""Sequence-understanding probes (Kim et al., KDD 2025, section 3) for any RecBole sequential model.

- :func:`shuffle_histories`: each row's history randomly permuted (seeded), every
  ``*_list`` field (items, timestamps, ratings, ...) with the same permutation, padding
  untouched. LLMSRec builds its prompt from ``item_id_list``, ``item_length`` and
  ``timestamp_list`` with numbering by position, so titles, ``[HistoryEmb]`` vectors and
  dates move together and the numbering stays, as in the paper.
- :func:`representation_similarity`: cosine between a user's vector from the original and
  from the shuffled history; :func:`other_user_similarity`, the cosine between different
  users' vectors, is its floor: a vector the shuffle leaves unchanged says little about order
  when every user's is about the same.
- :func:`warm_cold_items` and :func:`transition_users`: the paper's breakdowns.
- :func:`per_user_metrics`: RecBole's NDCG@k and Hit@k per evaluated user, from the same
  scores and masking as ``Trainer.evaluate`` (whose averages they reproduce).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.data.interaction import Interaction
from recbole.trainer import Trainer

WARM_COLD_SHARE = 0.35


# ---------------------------------------------------------------------- shuffling
def shuffle_permutation(lengths: torch.Tensor, width: int, seed: int, window: int | None = None) -> torch.Tensor:
    """Per-row permutations ``[R, width]`` of positions that shuffle the last ``window`` history items.

    Row ``r`` holds a history in positions ``[0, lengths[r])``. Its last ``min(window,
    lengths[r])`` positions (all of them when ``window`` is None) are permuted uniformly
    at random; earlier positions and the padding after the history map to themselves.
    Vectorised as an argsort of random keys: position ``p`` outside the window keeps key
    ``p``, a window position gets a uniform key inside ``[start, length)``.
    """
    lengths = lengths.to(torch.long).cpu()  # [R]
    size = lengths if window is None else lengths.clamp(max=window)  # [R]
    start = lengths - size  # [R]
    positions = torch.arange(width).expand(len(lengths), width)  # [R, L]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(len(lengths), width, generator=generator, dtype=torch.float64)  # [R, L]
    in_window = (positions >= start.unsqueeze(1)) & (positions < lengths.unsqueeze(1))  # [R, L]
    keys = torch.where(in_window, start.unsqueeze(1) + noise * size.unsqueeze(1), positions.double())
    return torch.argsort(keys, dim=1, stable=True)  # [R, L]


def list_fields(split) -> list[str]:
    """The split's history fields: ``item_id_list`` and every other ``*_list`` field of its shape."""
    suffix = split.config["LIST_SUFFIX"]
    item_list = f"{split.iid_field}{suffix}"
    inter = split.inter_feat
    if item_list not in inter.columns:
        return []
    shape = inter[item_list].shape
    return [field for field in inter.columns if field.endswith(suffix) and inter[field].shape[:2] == shape]


def shuffle_histories(split, seed: int, window: int | None = None):
    """A copy of a built split whose histories are shuffled (see :func:`shuffle_permutation`).

    A split without histories (a general recommender's data) comes back as an unchanged copy.
    """
    inter = split.inter_feat
    fields = list_fields(split)
    if not fields:
        return split.copy(inter[torch.arange(len(inter))])
    length_field = split.config["ITEM_LIST_LENGTH_FIELD"]
    width = inter[fields[0]].shape[1]
    permutation = shuffle_permutation(inter[length_field], width, seed, window)  # [R, L]
    columns = {}
    for field in inter.columns:
        values = inter[field]
        if field in fields:
            index = permutation.view(*permutation.shape, *([1] * (values.dim() - 2))).expand_as(values)
            values = torch.gather(values, 1, index.to(values.device))
        columns[field] = values
    return split.copy(Interaction(columns))


# ---------------------------------------------------------------------- representations
def has_user_vectors(model) -> bool:
    """Whether the model encodes a history into a user vector (RecBole sequential models, LLMSRec)."""
    return hasattr(model, "ITEM_SEQ") and hasattr(model, "ITEM_SEQ_LEN")


def row_batches(model, split, batch_size: int = 256) -> Iterator[Interaction]:
    """A built split's rows, in order, as interactions of at most ``batch_size`` rows on the model's device."""
    inter = split.inter_feat
    for begin in range(0, len(inter), batch_size):
        yield inter[torch.arange(begin, min(begin + batch_size, len(inter)))].to(model.device)


@torch.no_grad()
def user_vectors(model, split, batch_size: int = 256) -> torch.Tensor:
    """User vectors ``[R, d]`` for every row of a built split: what the model ranks items with.

    ``model.forward(item_seq, item_seq_len)`` for RecBole's sequential models; LLMSRec goes
    through ``user_vectors`` (its cached encoder, dates included), BERT4Rec through its
    test-time ``[mask]`` like its ``full_sort_predict``.
    """
    model.eval()
    vectors = []
    for batch in row_batches(model, split, batch_size):
        item_seq, item_seq_len = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]  # [B, L], [B]
        if hasattr(model, "user_vectors"):
            vectors.append(model.user_vectors(batch))
        elif hasattr(model, "reconstruct_test_data"):  # BERT4Rec: the output at the appended [mask], as it ranks
            output = model.forward(model.reconstruct_test_data(item_seq, item_seq_len))  # [B, L, H]
            vectors.append(model.gather_indexes(output, item_seq_len - 1))
        else:
            vectors.append(model.forward(item_seq, item_seq_len))
    return torch.cat(vectors).float().cpu()


def representation_similarity(model, split, shuffled_split, batch_size: int = 256) -> np.ndarray:
    """Per-row cosine similarity ``[R]`` between the user vectors of original and shuffled histories."""
    original = user_vectors(model, split, batch_size)  # [R, d]
    shuffled = user_vectors(model, shuffled_split, batch_size)  # [R, d]
    return F.cosine_similarity(original, shuffled, dim=1).numpy()


def other_user_similarity(model, split, seed: int, batch_size: int = 256) -> np.ndarray:
    """Per-row cosine similarity ``[R]`` between a row's user vector and another row's
    (:func:`cycle_cosine`); an LLM model's vectors come from its cache."""
    return cycle_cosine(user_vectors(model, split, batch_size), seed)


def cycle_cosine(vectors: torch.Tensor, seed: int) -> np.ndarray:
    """Cosine ``[R]`` of each row of ``vectors`` ``[R, d]`` with the row after it in a seeded random cycle (never itself)."""
    order = torch.randperm(len(vectors), generator=torch.Generator().manual_seed(seed))  # [R]
    cosine = F.cosine_similarity(vectors[order], vectors[order.roll(-1)], dim=1)  # [R], in cycle order
    return cosine[torch.argsort(order)].numpy()


# ---------------------------------------------------------------------- breakdowns
def training_sequences(train_split) -> tuple[np.ndarray, np.ndarray]:
    """Every training interaction as ``(users [N], items [N])``, grouped by user, in time order.

    A sequential split holds one row per prefix (history -> target): a user's items are
    the first history item of their first row, then every row's target. A general split
    holds the interactions themselves.
    """
    inter = train_split.inter_feat
    users = inter[train_split.uid_field].numpy()
    items = inter[train_split.iid_field].numpy()
    order_in_split = np.arange(len(users))
    item_list = f"{train_split.iid_field}{train_split.config['LIST_SUFFIX']}"
    if item_list in inter.columns:
        first = np.ones(len(users), dtype=bool)
        first[1:] = users[1:] != users[:-1]
        users = np.concatenate([users[first], users])
        items = np.concatenate([inter[item_list].numpy()[first, 0], items])
        order_in_split = np.concatenate([order_in_split[first] - 0.5, order_in_split])
    order = np.lexsort((order_in_split, users))  # by user, then time
    return users[order], items[order]


def item_popularity(train_split) -> np.ndarray:
    """Training interactions per item id ``[n_items]`` (row 0, padding, is 0)."""
    _, items = training_sequences(train_split)
    return np.bincount(items, minlength=train_split.item_num)


def warm_cold_items(popularity: np.ndarray, share: float = WARM_COLD_SHARE) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``[n_items]`` of the warm (top ``share`` by popularity) and cold (bottom ``share``) items.

    Item ids ``1..n_items-1`` are ranked by training popularity, ties by id; both groups
    hold ``round(share * (n_items - 1))`` items, padding is in neither.
    """
    ids = np.arange(1, len(popularity))
    ranked = ids[np.lexsort((ids, -popularity[ids]))]  # most popular first
    size = int(round(share * len(ids)))
    warm = np.zeros(len(popularity), dtype=bool)
    cold = np.zeros(len(popularity), dtype=bool)
    warm[ranked[:size]] = True
    cold[ranked[len(ranked) - size :]] = True
    return warm, cold


def transition_share(train_split) -> np.ndarray:
    """Per user id ``[n_users]``: share of the user's consecutive training pairs that another user also has.

    A pair ``(i_k, i_{k+1})`` counts when at least one other user's training sequence
    holds the same consecutive pair. Users without a pair get 0.
    """
    users, items = training_sequences(train_split)
    same_user = users[1:] == users[:-1]
    pair_users = users[1:][same_user]  # [P]
    pair_codes = items[:-1][same_user].astype(np.int64) * train_split.item_num + items[1:][same_user]  # [P]
    distinct = np.unique(np.stack([pair_codes, pair_users], 1), axis=0)  # [Q, 2] (pair, user)
    codes, users_per_code = np.unique(distinct[:, 0], return_counts=True)
    shared = users_per_code[np.searchsorted(codes, pair_codes)] >= 2  # [P]
    totals = np.bincount(pair_users, minlength=train_split.user_num)
    hits = np.bincount(pair_users, weights=shared, minlength=train_split.user_num)
    return np.divide(hits, totals, out=np.zeros(len(totals)), where=totals > 0)


def transition_users(share: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks over ``users [U]``: the top half by transition share, and the rest (ties by user id).

    The two masks partition ``users``; the top half has ``U // 2`` users.
    """
    ranked = np.lexsort((users, -share[users]))  # positions into users, highest share first
    top = np.zeros(len(users), dtype=bool)
    top[ranked[: len(users) // 2]] = True
    return top, ~top


# ---------------------------------------------------------------------- per-user metrics
@torch.no_grad()
def per_user_metrics(trainer: Trainer, eval_data, topk: list[int]) -> dict[str, np.ndarray]:
    """NDCG@k and Hit@k of each evaluated user, plus ``user`` and ``item`` (the target) ids, all ``[U]``.

    Scores and masking come from the trainer's own batch evaluation (full ranking or
    sampled candidates, as the loader says); ranks from ``torch.topk`` as in RecBole's
    collector, so the means equal ``trainer.evaluate(eval_data)``. Needs one target per
    user (leave-one-out splits).

    Raises:
        ValueError: a user has several targets.
    """
    trainer.model.eval()
    dataset = eval_data._dataset
    trainer.tot_item_num = dataset.item_num
    full = isinstance(eval_data, FullSortEvalDataLoader)
    if full and trainer.item_tensor is None:
        trainer.item_tensor = dataset.get_item_feature().to(trainer.device)
    evaluate_batch = trainer._full_sort_batch_eval if full else trainer._neg_sample_batch_eval
    max_k = max(topk)
    users, targets, ranks = [], [], []
    for batched_data in eval_data:
        interaction, scores, positive_u, positive_i = evaluate_batch(batched_data)  # scores [B, n_items]
        batch_users = torch.zeros(len(scores), dtype=torch.long)
        rows = torch.arange(len(interaction)) if full else batched_data[1]
        batch_users[rows.cpu()] = interaction[dataset.uid_field].cpu()
        if torch.bincount(positive_u.cpu(), minlength=len(scores)).ne(1).any():
            raise ValueError("Per-user metrics need exactly one target per user (a leave-one-out split).")
        batch_targets = torch.zeros(len(scores), dtype=torch.long)
        batch_targets[positive_u.cpu()] = positive_i.cpu()
        _, topk_idx = torch.topk(scores, max_k, dim=-1)  # [B, K]
        found = topk_idx.cpu() == batch_targets.unsqueeze(1)  # [B, K]
        ranks.append(torch.where(found.any(1), found.float().argmax(1), max_k))  # 0-based, max_k = not found
        users.append(batch_users)
        targets.append(batch_targets)
    rank = torch.cat(ranks).numpy()
    result = {"user": torch.cat(users).numpy(), "item": torch.cat(targets).numpy()}
    for k in topk:
        hit = rank < k
        result[f"hit@{k}"] = hit.astype(float)
        result[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)
    return result


def group_means(per_user: dict[str, np.ndarray], groups: dict[str, np.ndarray], metrics: list[str]) -> dict[str, dict]:
    """Mean of each metric over each group's users (``groups``: boolean masks aligned with ``per_user``)."""
    return {
        name: {"users": int(mask.sum()), **{m: float(per_user[m][mask].mean()) if mask.any() else float("nan") for m in metrics}}
        for name, mask in groups.items()
    }


def breakdown_groups(train_split, per_user: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Masks over ``per_user``'s users: warm / cold target item, transition / non-transition user."""
    warm, cold = warm_cold_items(item_popularity(train_split))
    transition, non_transition = transition_users(transition_share(train_split), per_user["user"])
    return {
        "warm": warm[per_user["item"]],
        "cold": cold[per_user["item"]],
        "transition": transition,
        "non-transition": non_transition,
    }
