"""Trainers: LLMSRec's (safetensors checkpoints, Adam betas) and the teacher's (loss at every position)."""

from __future__ import annotations

import contextlib
import os
from functools import partial
from time import time
from typing import Iterator

import torch
import torch.nn.functional as F
from recbole.trainer import Trainer

from recbole_llmsrec.checkpoint import load_checkpoint, save_checkpoint


@contextlib.contextmanager
def all_positions(model) -> Iterator[None]:
    """Make a RecBole sequential model's ``forward`` return every position ``[B, L, H]``.

    RecBole's SASRec, GRU4Rec and others end ``forward`` with ``gather_indexes(output,
    item_seq_len - 1)``; the identity in its place keeps the whole sequence output.
    """
    model.gather_indexes = lambda output, gather_index: output
    try:
        yield
    finally:
        del model.gather_indexes


def next_item_targets(item_seq: torch.Tensor, item_seq_len: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next item at every position ``[B, L]``: the sequence shifted left, the target at the last item, 0 after."""
    labels = torch.zeros_like(item_seq)
    labels[:, :-1] = item_seq[:, 1:]
    labels[torch.arange(len(item_seq), device=item_seq.device), item_seq_len - 1] = targets
    positions = torch.arange(item_seq.shape[1], device=item_seq.device)
    return torch.where(positions < item_seq_len.unsqueeze(1), labels, 0)


def all_positions_loss(model, interaction) -> torch.Tensor:
    """Cross-entropy over all items for the next item at every position of each sequence."""
    item_seq = interaction[model.ITEM_SEQ]  # [B, L]
    item_seq_len = interaction[model.ITEM_SEQ_LEN]  # [B]
    with all_positions(model):
        outputs = model.forward(item_seq, item_seq_len)  # [B, L, H]
    logits = outputs @ model.item_embedding.weight.T  # [B, L, n_items]
    labels = next_item_targets(item_seq, item_seq_len, interaction[model.POS_ITEM_ID])  # [B, L]
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=0)


class SafetensorsCheckpointTrainer(Trainer):
    """RecBole's trainer with pickle-free checkpoints: tensors in safetensors, config as JSON."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.saved_model_file = os.path.splitext(self.saved_model_file)[0] + ".safetensors"

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        training_state = {"epoch": epoch, "cur_step": self.cur_step, "best_valid_score": self.best_valid_score}
        save_checkpoint(saved_model_file, self.model, self.config, training_state, self.optimizer)
        if verbose:
            self.logger.info(f"Saving current: {saved_model_file}")

    def resume_checkpoint(self, resume_file):
        self.saved_model_file = str(resume_file)
        training = load_checkpoint(resume_file, self.model, self.optimizer)["training"]
        self.start_epoch = training["epoch"] + 1
        self.cur_step = training["cur_step"]
        self.best_valid_score = training["best_valid_score"]
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            checkpoint_file = model_file or self.saved_model_file
            load_checkpoint(checkpoint_file, self.model)
            self.logger.info(f"Loading model parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)


class LLMSRecTrainer(SafetensorsCheckpointTrainer):
    """Trainer of LLMSRec: only the trainable tensors reach checkpoints; Adam takes the paper's betas."""

    def _build_optimizer(self, **kwargs):
        if (kwargs.get("learner") or self.learner).lower() != "adam":
            return super()._build_optimizer(**kwargs)
        return torch.optim.Adam(
            kwargs.get("params", self.model.parameters()),
            lr=kwargs.get("learning_rate", self.learning_rate),
            betas=tuple(self.config["adam_betas"]),
            weight_decay=kwargs.get("weight_decay", self.weight_decay),
        )


class TeacherTrainer(SafetensorsCheckpointTrainer):
    """RecBole's trainer with the next-item loss at every position of each user's sequence.

    ``per_position_loss`` is switched off for teacher models whose ``forward`` cannot
    return every position; they then train on RecBole's per-prefix samples as usual.
    """

    per_position_loss = True

    def __init__(self, config, model):
        super().__init__(config, model)
        self.epoch_seconds: list[float] = []

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if loss_func is None and self.per_position_loss:
            loss_func = partial(all_positions_loss, self.model)
        start = time()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.epoch_seconds.append(time() - start)
        return loss
