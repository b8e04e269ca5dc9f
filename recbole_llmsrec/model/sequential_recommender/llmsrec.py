r"""
LLMSRec
################################################

Reference:
    Sein Kim et al. "Lost in Sequence: Do Large Language Models Understand Sequential
    Recommendation?" In KDD 2025. arXiv:2502.13909.

Reference code:
    https://github.com/Sein-Kim/LLM-SRec

A frozen causal LLM reads a prompt listing the user's latest items; after each title a
``[HistoryEmb]`` slot holds that item's embedding from a frozen, pre-trained CF sequential
recommender (the teacher) passed through ``f_I``. The last hidden state at ``[UserOut]``
through ``f_user`` is the user vector; items get the same treatment with ``[ItemOut]`` and
``f_item``. Only the small MLPs and the two output-token vectors train, on a next-item
retrieval loss, a distillation of the teacher's user vector and a uniformity loss.
The prompts, LLM passes and scoring are :class:`~recbole_llmsrec.model.abstract_recommender.LLMRecommender`'s.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_llmsrec.model.abstract_recommender import LLMRecommender, projection_mlp, retrieval_loss


def uniformity_loss(normalized: torch.Tensor) -> torch.Tensor:
    """Mean over distinct pairs of ``exp(-2 * ||x_i - x_j||^2)`` for L2-normalised rows ``[B, D]``."""
    if normalized.shape[0] < 2:
        return normalized.new_zeros(())
    return torch.pdist(normalized, p=2).pow(2).mul(-2).exp().mean()


def contrastive_distillation(user_normalized: torch.Tensor, cf_normalized: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between L2-normalised user ``[B, D]`` and teacher ``[B, D]`` vectors.

    Each user's own teacher vector is the positive, the batch's others the negatives, so only
    what tells users apart lowers it: a direction every user shares lowers the MSE, not this.
    """
    logits = user_normalized @ cf_normalized.T / temperature  # [B, B]
    own = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, own) + F.cross_entropy(logits.T, own)) / 2


class LLMSRec(LLMRecommender):
    r"""LLM-SRec: a frozen LLM made sequence-aware by distilling a frozen CF-SRec teacher."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)  # the LLM, prompts, f_I, f_user, f_item and f_cf_user (_define_layers)

        # load parameters info
        self.distill_weight = config["distill_weight"]
        self.uniform_weight = config["uniform_weight"]
        self.distill_reduction = config["distill_reduction"]
        self.distill_loss = config["distill_loss"]
        self.distill_temperature = config["distill_temperature"]
        self.teacher_dropout = config["teacher_dropout"]
        self.cf_user_head_trainable = config["cf_user_head_trainable"]

        # Frozen, f_cf_user is a fixed random projection of the teacher's vector: the distillation
        # target cannot move towards u, so u must move towards (every part of) the teacher's state.
        self.cf_user_head.requires_grad_(self.cf_user_head_trainable)

    def _define_layers(self, config, llm_size: int, cf_size: int | None) -> None:
        # f_cf_user: the teacher's user vector projected to d', the distillation target
        self.cf_user_head = projection_mlp(cf_size, self.projection_size, self.projection_size, nn.GELU())

    def _extra_loss_inputs(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, rows: slice) -> tuple[torch.Tensor]:
        """The projected teacher user vectors ``[b, d']`` of this rank's rows (drawn for the whole batch)."""
        with torch.no_grad():
            # The authors compute the target with the teacher in train mode (its dropout on).
            self.teacher.train(self.teacher_dropout)
            teacher_users = self.teacher(item_seq, item_seq_len)[rows]  # [b, d_cf]
            self.teacher.eval()
        return (self.cf_user_head(teacher_users),)  # [b, d']

    def weighted_losses(
        self, user_vectors: torch.Tensor, candidate_vectors: torch.Tensor, cf_user_vectors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three losses from user ``[B, d']``, candidate (target first) ``[B, C, d']`` and teacher ``[B, d']`` vectors."""
        retrieval = retrieval_loss(user_vectors, candidate_vectors)
        user_normalized = F.normalize(user_vectors, dim=-1)
        cf_normalized = F.normalize(cf_user_vectors, dim=-1)
        if self.distill_loss == "contrastive":
            distill = contrastive_distillation(user_normalized, cf_normalized, self.distill_temperature)
        else:
            # "mean" is the authors' MSE over every element (2 - 2 cos, divided by d'); "sum" adds
            # over the d' elements: 2 - 2 cos per user, d' times the gradient.
            distill = F.mse_loss(user_normalized, cf_normalized, reduction="none").sum(-1).mean()
            if self.distill_reduction == "mean":
                distill = distill / user_normalized.shape[1]
        self.last_distill_cosine = (user_normalized * cf_normalized).sum(-1).mean().detach()  # no device sync here
        uniform = uniformity_loss(user_normalized) + uniformity_loss(cf_normalized)
        return (
            self.retrieval_weight * retrieval,
            self.distill_weight * distill,
            self.uniform_weight * uniform,
        )
