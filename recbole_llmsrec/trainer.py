"""Trainers: LLMSRec's (safetensors checkpoints, Adam betas) and the teacher's (loss at every position)."""

from __future__ import annotations

import os
from functools import partial
from time import time

import torch
from recbole.trainer import Trainer

from recbole_llmsrec.checkpoint import load_checkpoint, save_checkpoint
from recbole_llmsrec.teacher import all_positions_loss


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
