"""Use a trained model: top-k recommendations for known users or new histories, and vectors for serving.

Works with every checkpoint the plugin writes (safetensors, loaded without unpickling):
LLMSRec, a teacher, or any RecBole sequential model trained through ``run_recbole_llmsrec``.

    recommender = Recommender.from_checkpoint("saved/LLMSRec-....safetensors")
    recommender.recommend_users(["196", "186"], k=10)          # after everything each user did
    recommender.recommend_history(["242", "302"], k=10)        # a new user's history, oldest first
    recommender.export("vectors.safetensors")                  # user and item vectors, with their tokens
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from recbole.data.interaction import Interaction
from safetensors.torch import save_file
from tqdm import tqdm

from recbole_llmsrec import probes
from recbole_llmsrec.data_preparation import last_prefix_per_user
from recbole_llmsrec.quick_start import load_data_and_model


@dataclass
class Recommendation:
    """Top-k items of one user or history, best first."""

    user: str | None
    items: list[str]
    scores: list[float]


class Recommender:
    """Top-k items and user/item vectors from a trained sequential model and its dataset.

    A known user's history is every interaction the dataset holds for them (train, valid and
    test), oldest first, the latest ``MAX_ITEM_LIST_LENGTH`` read by the model:
    recommendations are what comes next. ``dataset`` is the built dataset of the run.
    """

    def __init__(self, config, model, dataset) -> None:
        if not probes.has_user_vectors(model):
            raise ValueError(f"{type(model).__name__} is not a sequential model: it has no history to recommend from.")
        self.config, self.model, self.dataset = config, model.eval(), dataset
        self.max_length = config["MAX_ITEM_LIST_LENGTH"]
        self.item_tokens = dataset.field2id_token[dataset.iid_field]
        self.user_tokens = dataset.field2id_token[dataset.uid_field]
        # A built sequential dataset holds one row per prefix; each user's longest is its whole history.
        latest = last_prefix_per_user(dataset).inter_feat
        # user id -> every item (and its time), oldest first, up to MAX_ITEM_LIST_LENGTH + 1
        self._histories: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        time_list = f"{dataset.time_field}{config['LIST_SUFFIX']}" if dataset.time_field else None
        for row in range(len(latest)):
            length = int(latest[model.ITEM_SEQ_LEN][row])
            items = np.append(latest[model.ITEM_SEQ][row, :length].numpy(), int(latest[dataset.iid_field][row]))
            times = None
            if time_list in latest.columns:
                times = np.append(latest[time_list][row, :length].numpy(), float(latest[dataset.time_field][row]))
            self._histories[int(latest[dataset.uid_field][row])] = (items, times)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike) -> "Recommender":
        """Rebuild the run of a plugin checkpoint (``.safetensors``; no unpickling)."""
        config, model, dataset, *_ = load_data_and_model(str(path))
        return cls(config, model, dataset)

    # ------------------------------------------------------------------ ids
    def _user_ids(self, users: Sequence[str] | None) -> list[int]:
        if users is None:
            return sorted(self._histories)
        unknown = [u for u in users if u not in self.dataset.field2token_id[self.dataset.uid_field]]
        if unknown:
            raise KeyError(f"Unknown user tokens {unknown[:10]}{' ...' if len(unknown) > 10 else ''}: "
                           f"not in {self.config['dataset']!r}. Use recommend_history for new users.")
        return [self.dataset.field2token_id[self.dataset.uid_field][u] for u in users]

    # ------------------------------------------------------------------ scoring
    def _interaction(self, histories: list[np.ndarray], times: list[np.ndarray | None]) -> Interaction:
        histories = [h[-self.max_length:] for h in histories]
        item_seq = torch.zeros(len(histories), self.max_length, dtype=torch.long)  # [B, L]
        time_seq = torch.zeros(len(histories), self.max_length)  # [B, L]
        for row, (history, stamps) in enumerate(zip(histories, times)):
            item_seq[row, : len(history)] = torch.as_tensor(history, dtype=torch.long)
            if stamps is not None:
                time_seq[row, : len(history)] = torch.as_tensor(stamps[-self.max_length:], dtype=torch.float)
        fields = {self.model.ITEM_SEQ: item_seq, self.model.ITEM_SEQ_LEN: torch.tensor([len(h) for h in histories])}
        if self.dataset.time_field and all(t is not None for t in times):
            fields[f"{self.dataset.time_field}{self.config['LIST_SUFFIX']}"] = time_seq
        return Interaction(fields).to(self.model.device)

    @torch.no_grad()
    def _top_k(self, histories: list[np.ndarray], times: list[np.ndarray | None], k: int,
               exclude_seen: list[np.ndarray] | None) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.model.full_sort_predict(self._interaction(histories, times)).float().cpu()  # [B, n_items]
        scores[:, 0] = -torch.inf  # padding
        if exclude_seen is not None:
            for row, seen in enumerate(exclude_seen):
                scores[row, torch.as_tensor(seen, dtype=torch.long)] = -torch.inf
        return scores.topk(min(k, scores.shape[1] - 1), dim=1)

    def recommend_users(self, users: Sequence[str] | None = None, k: int = 10, exclude_seen: bool = True,
                        batch_size: int = 64, show_progress: bool = False) -> list[Recommendation]:
        """Top-k items for known users (tokens; None for every user) after all their interactions."""
        user_ids = self._user_ids(users)
        results = []
        batches = range(0, len(user_ids), batch_size)
        for begin in tqdm(batches, desc="Recommending", ncols=100, disable=not show_progress):
            ids = user_ids[begin: begin + batch_size]
            histories, times = zip(*(self._histories[u] for u in ids))
            top_scores, top_items = self._top_k(list(histories), list(times), k, list(histories) if exclude_seen else None)
            results += [self._recommendation(self.user_tokens[u], items, scores)
                        for u, items, scores in zip(ids, top_items, top_scores)]
        return results

    def recommend_history(self, items: Sequence[str], timestamps: Sequence[float] | None = None, k: int = 10,
                          exclude_seen: bool = True, skip_unknown: bool = False) -> Recommendation:
        """Top-k items for a new history of item tokens (oldest first), with optional unix-second timestamps."""
        if timestamps is not None and len(timestamps) != len(items):
            raise ValueError(f"{len(timestamps)} timestamps for {len(items)} items: give one per item, or none.")
        token_id = self.dataset.field2token_id[self.dataset.iid_field]
        unknown = [item for item in items if item not in token_id]
        if unknown and not skip_unknown:
            raise KeyError(f"Unknown item tokens {unknown[:10]}{' ...' if len(unknown) > 10 else ''}: not in the "
                           f"catalogue of {self.config['dataset']!r}. Pass skip_unknown=True to leave them out.")
        kept = [i for i, item in enumerate(items) if item in token_id]
        if not kept:
            raise ValueError("The history holds no known item: nothing to recommend from.")
        history = np.array([token_id[items[i]] for i in kept])
        stamps = None if timestamps is None else np.array([timestamps[i] for i in kept], dtype=float)
        top_scores, top_items = self._top_k([history], [stamps], k, [history] if exclude_seen else None)
        return self._recommendation(None, top_items[0], top_scores[0])

    def _recommendation(self, user: str | None, items: torch.Tensor, scores: torch.Tensor) -> Recommendation:
        finite = torch.isfinite(scores)
        return Recommendation(user, [str(self.item_tokens[i]) for i in items[finite].tolist()], scores[finite].tolist())

    # ------------------------------------------------------------------ vectors
    @torch.no_grad()
    def user_vectors(self, users: Sequence[str] | None = None, batch_size: int = 64,
                     show_progress: bool = False) -> tuple[list[str], torch.Tensor]:
        """User tokens and their vectors ``[U, d]`` after all their interactions (what ranks items)."""
        user_ids = self._user_ids(users)
        vectors = []
        for begin in tqdm(range(0, len(user_ids), batch_size), desc="User vectors", ncols=100, disable=not show_progress):
            histories, times = zip(*(self._histories[u] for u in user_ids[begin: begin + batch_size]))
            batch = self._interaction(list(histories), list(times))
            vectors.append(probes.user_vectors(self.model, _Split(batch), batch_size=len(histories)))
        return [str(self.user_tokens[u]) for u in user_ids], torch.cat(vectors)

    @torch.no_grad()
    def item_vectors(self) -> tuple[list[str], torch.Tensor]:
        """Item tokens and vectors ``[n_items - 1, d]`` such that a user's score is ``user_vector @ item_vector``."""
        if hasattr(self.model, "catalogue_item_vectors"):
            vectors = self.model.catalogue_item_vectors()
        else:
            vectors = self.model.item_embedding.weight
        return [str(t) for t in self.item_tokens[1:]], vectors[1:].float().cpu()

    def export(self, path: str | os.PathLike, show_progress: bool = False) -> None:
        """Write ``user_vectors`` and ``item_vectors`` (safetensors) with their tokens in the metadata."""
        users, user_matrix = self.user_vectors(show_progress=show_progress)
        items, item_matrix = self.item_vectors()
        metadata = {"user_tokens": json.dumps(users), "item_tokens": json.dumps(items),
                    "model": self.config["model"], "dataset": self.config["dataset"]}
        save_file({"user_vectors": user_matrix.contiguous(), "item_vectors": item_matrix.contiguous()}, str(path),
                  metadata=metadata)


class _Split:
    """The one attribute of a RecBole split that :func:`recbole_llmsrec.probes.user_vectors` reads."""

    def __init__(self, inter_feat: Interaction) -> None:
        self.inter_feat = inter_feat
