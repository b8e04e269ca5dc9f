"""Trainers: LLMSRec's (safetensors checkpoints, Adam betas) and the teacher's (loss at every position)."""

from __future__ import annotations

import contextlib
import math
import os
import uuid
from functools import partial
from time import time
from typing import Iterator

import torch
import torch.nn.functional as F
from recbole.evaluator import Collector
from recbole.trainer import Trainer

from recbole_llmsrec.checkpoint import (
    cpu_tensors, load_checkpoint, load_optimizer, optimizer_tensors, read_metadata, read_tensors, rng_state,
    save_checkpoint, set_rng_state,
)
from recbole_llmsrec.distributed import all_gather_objects, broadcast_object, is_distributed, is_main_process
from recbole_llmsrec.fingerprints import check_fingerprints


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


class RankGatheringCollector(Collector):
    """RecBole's evaluation collector that, in a distributed run, sees every rank's rows.

    RecBole averages each rank's metrics, weighted by a batch count, over shards that its
    ``DistributedSampler`` pads with repeated users: close to, but not, the single-process
    metrics. Here every rank gathers the per-user rows of all ranks, drops the padding and
    computes the metrics of the whole split itself, as one process would.
    """

    PER_ROW_KEYS = ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label")  # RecBole's per-evaluation keys

    def __init__(self, config) -> None:
        super().__init__(config)
        self.rows: int | None = None  # users of the split being evaluated, set before each evaluation

    def get_data_struct(self):
        struct = super().get_data_struct()
        if not is_distributed():
            return struct
        local = {key: struct[key] for key in self.PER_ROW_KEYS if key in struct}
        gathered = all_gather_objects(local)
        for key in local:
            # DistributedSampler gives rank r the split's rows r, r + W, r + 2W, ... (padded to equal counts)
            interleaved = torch.stack([rows[key] for rows in gathered], 1).flatten(0, 1)  # [M * W, ...]
            struct[key] = interleaved[: self.rows]
        return struct


class SafetensorsCheckpointTrainer(Trainer):
    """RecBole's trainer with pickle-free checkpoints (safetensors) and exact resume.

    The run's checkpoint holds the best weights, which ``evaluate`` loads, the run's
    fingerprints (:attr:`fingerprints`: data, teacher, LLM; loading elsewhere is refused) and
    whether the run finished. After every validation of an unfinished run it also holds a
    resume state: the latest weights, optimizer moments, early-stopping state, the training
    loader's shuffling generator, every global random generator and the training time so far.
    :meth:`resume_checkpoint` continues from it to the same result as the uninterrupted run;
    the finished run's checkpoint drops it and keeps what the fit measured (training time,
    epochs trained), which :meth:`load_finished` restores instead of training again.
    :attr:`fit_seconds` is the training's wall time, validations included, summed over the
    interrupted parts (None when a resumed checkpoint did not record it).

    In a distributed run every rank keeps the best weights in memory and evaluates on all
    users' rows (:class:`RankGatheringCollector`); only rank 0 writes the checkpoint.
    """

    def __init__(self, config, model):
        # RecBole's ensure_dir checks, then creates: ranks starting together race on it
        os.makedirs(config["checkpoint_dir"], exist_ok=True)
        super().__init__(config, model)
        # RecBole names checkpoints by the second: two runs started together would share one.
        unique_name = f"{os.path.splitext(self.saved_model_file)[0]}-{uuid.uuid4().hex[:8]}.safetensors"
        self.saved_model_file = broadcast_object(unique_name)  # every rank names rank 0's file
        self.eval_collector = RankGatheringCollector(config)
        self.fingerprints: dict[str, str] = dict(getattr(model, "fingerprints", {}))
        self._best_weights: dict[str, torch.Tensor] | None = None
        self._best_epoch = -1
        self._resume_from: tuple[dict[str, torch.Tensor], dict] | None = None
        self._written_after_validation = False
        self.fit_seconds: float | None = 0.0
        self._reused_epochs: float | None = 0.0  # epochs of the finished run load_finished took

    def _training_state(self, finished: bool) -> dict:
        return {"epoch": self._best_epoch, "cur_step": self.cur_step, "best_valid_score": self.best_valid_score,
                "finished": finished, "fit_seconds": self.fit_seconds, "epochs_trained": self.epochs_trained()}

    def epochs_trained(self) -> float | None:
        """Training epochs run so far (None for a reused finished run that did not record them). A
        resumed fit's ``train_loss_dict`` holds only the epochs after the interruption, keyed by
        their index in the whole run, so the last index counts them all."""
        last = max(self.train_loss_dict, default=None)
        return self._reused_epochs if last is None else last + 1.0

    def _write_checkpoint(self, finished: bool, resume: tuple[dict[str, torch.Tensor], dict] | None = None) -> None:
        """Write the best weights (and the resume state) to the run's checkpoint; rank 0 only."""
        if is_main_process():
            save_checkpoint(self.saved_model_file, self._best_weights, self.config, self._training_state(finished),
                            self.fingerprints, resume=resume)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        self.saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        self._best_weights, self._best_epoch = cpu_tensors(self.model), epoch
        if not self._written_after_validation:  # else the file is written once, with the resume state
            self._write_checkpoint(finished=False)
        if verbose:
            self.logger.info(f"Saving current: {self.saved_model_file}")

    # ------------------------------------------------------------------ exact resume
    def _resume_state(self, round_idx: int, train_data) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything the rest of the run depends on, after validation round ``round_idx``."""
        tensors = {f"model.{name}": value for name, value in cpu_tensors(self.model).items()}
        moments, param_groups = optimizer_tensors(self.optimizer)
        generators, generator_state = rng_state()
        tensors.update(moments)
        tensors.update(generators)
        tensors["rng.loader"] = train_data.generator.get_state()
        state = {"round": round_idx, "cur_step": self.cur_step, "best_valid_score": self.best_valid_score,
                 "best_valid_result": self.best_valid_result, "param_groups": param_groups, "rng": generator_state,
                 "fit_seconds": self.fit_seconds}
        return tensors, state

    def _restore_loader(self, train_data, tensors: dict[str, torch.Tensor], state: dict) -> None:
        """Put the training loader where the interrupted run left it (an epoch boundary here)."""
        train_data.generator.set_state(tensors["rng.loader"])

    def resume_checkpoint(self, resume_file):
        """Continue the unfinished run of ``resume_file`` (weights, optimizer, early stopping, random
        generators and the training loader's position restored when ``fit`` starts).

        Raises:
            ValueError: the run finished (nothing to resume), the file holds no resume state, or it
                was trained on other data, teacher or LLM.
        """
        metadata = read_metadata(resume_file)
        check_fingerprints(metadata["fingerprints"], self.fingerprints, f"Checkpoint {resume_file}")
        training, state = metadata["training"], metadata["resume"]
        if training.get("finished"):
            raise ValueError(f"{resume_file} is the checkpoint of a finished run: nothing to resume. "
                             "Evaluate it, or use it with --recommend / --export.")
        if state is None:
            raise ValueError(f"{resume_file} holds no resume state: its run stopped before the end of its first "
                             "validation. Start the run again.")
        self._best_weights, tensors = read_tensors(resume_file)
        self._best_epoch = training["epoch"]
        self.model.load_state_dict({name[len("model."):]: value for name, value in tensors.items() if name.startswith("model.")})
        load_optimizer(self.optimizer, tensors, state["param_groups"])
        self.start_epoch = state["round"] + 1
        self.cur_step, self.best_valid_score = state["cur_step"], state["best_valid_score"]
        self.best_valid_result = state["best_valid_result"]
        self.fit_seconds = state.get("fit_seconds")  # absent from checkpoints written before it was kept
        self.saved_model_file = str(resume_file)
        self._resume_from = (tensors, state)
        self.logger.info(f"Resuming {resume_file} after validation round {state['round']}")

    def load_finished(self, checkpoint: str) -> dict:
        """Take the finished run of ``checkpoint`` as this trainer's fit: its best weights (which
        ``evaluate`` loads), best validation score, training time and epochs trained; return its
        training state. A run interrupted after its training is thus evaluated, not trained again.

        Raises:
            ValueError: the run did not finish, or it was trained on other data, teacher or LLM.
        """
        metadata = read_metadata(checkpoint)
        check_fingerprints(metadata["fingerprints"], self.fingerprints, f"Checkpoint {checkpoint}")
        training = metadata["training"]
        if not training.get("finished"):
            raise ValueError(f"{checkpoint} is the checkpoint of an unfinished run: continue it (resume) instead.")
        self._best_weights, _ = read_tensors(checkpoint)
        self._best_epoch, self.cur_step = training["epoch"], training["cur_step"]
        self.best_valid_score = training["best_valid_score"]
        # absent from checkpoints written before they were kept
        self.fit_seconds, self._reused_epochs = training.get("fit_seconds"), training.get("epochs_trained")
        self.saved_model_file = str(checkpoint)
        self.logger.info(f"Reusing the finished training of {checkpoint}")
        return training

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if self._resume_from is not None:
            tensors, state = self._resume_from
            self._restore_loader(train_data, tensors, state)
            set_rng_state(tensors, state["rng"])  # last: restoring the loader may draw numbers
            self._resume_from = None

        self._written_after_validation = saved and bool(valid_data) and self.eval_step > 0
        seconds_before, start = self.fit_seconds, time()

        def clock() -> None:
            self.fit_seconds = None if seconds_before is None else seconds_before + time() - start

        def after_validation(round_idx, valid_score):
            clock()
            if saved and self._best_weights is not None and is_main_process():  # other ranks skip the resume-state copy
                self._write_checkpoint(finished=False, resume=self._resume_state(round_idx, train_data))
            if callback_fn:
                callback_fn(round_idx, valid_score)

        try:
            result = super().fit(train_data, valid_data, verbose, saved, show_progress, after_validation)
        finally:
            self._written_after_validation = False
            clock()
        if saved and self._best_weights is not None:
            self._write_checkpoint(finished=True)
        return result

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            if model_file is None and self._best_weights is not None:  # this run's best, kept on every rank
                self.model.load_state_dict(self._best_weights)
                self.logger.info(f"Loading this run's best model parameters (also in {self.saved_model_file})")
            else:
                load_checkpoint(model_file or self.saved_model_file, self.model, self.fingerprints)
                self.logger.info(f"Loading model parameters from {model_file or self.saved_model_file}")
        if eval_data:
            self.eval_collector.rows = eval_data.sample_size
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)

    def _map_reduce(self, result, num_sample):
        return result  # every rank already computed the whole split's metrics (RankGatheringCollector)


class TrainingDiverged(RuntimeError):
    """Training cannot produce a usable model any more (non-finite loss, exploded weights, collapsed catalogue)."""


class EpochSlice:
    """The next ``size`` batches of a RecBole train dataloader, continuing one pass over it.

    RecBole's ``fit`` validates between its "epochs"; handing ``_train_epoch`` one slice
    of the real epoch at a time makes it validate several times per epoch with RecBole's
    own loop, early stopping and checkpoints. A new pass (and a new shuffle) starts when
    the previous one is used up.
    """

    def __init__(self, loader, size: int, batches) -> None:
        self.size, self.batches = size, batches
        # Read by RecBole's distributed _train_epoch, which would restart the sampler's epoch at
        # every slice; LLMSRecTrainer starts each epoch itself.
        self.shuffle = False

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        for _ in range(self.size):
            yield next(self.batches)


def validation_rounds(batches_per_epoch: int, validations_per_epoch: int) -> list[int]:
    """Batches between consecutive validations in one epoch: ``validations_per_epoch`` near-equal
    slices (fewer when an epoch has fewer batches), the last one ending the epoch."""
    rounds = max(1, min(validations_per_epoch, batches_per_epoch))
    bounds = [batches_per_epoch * k // rounds for k in range(rounds + 1)]
    return [end - start for start, end in zip(bounds, bounds[1:])]


class LLMSRecTrainer(SafetensorsCheckpointTrainer):
    """Trainer of LLMSRec with the authors' schedule (``train_model.py``).

    - validation ``validations_per_epoch`` times per epoch (the authors: every 10% of it);
    - the learning rate multiplied by ``lr_decay_per_validation`` after each validation;
    - early stopping after ``stopping_step`` validations without improvement, the best
      weights restored for test (RecBole's own ``fit`` and ``evaluate``);
    - per validation: each loss term, the mean cosine between the LLM user vector and the
      projected teacher vector, the learning rate and the validation result, logged, written
      to TensorBoard and kept in :attr:`curve`;
    - :class:`TrainingDiverged` at a non-finite loss term, an exploded weight or a collapsed
      catalogue, naming the step and what to change.

    Only the trainable tensors reach checkpoints; Adam takes the paper's betas.
    """

    LOSS_NAMES = ("retrieval", "distillation", "uniformity")
    MAX_WEIGHT = 1e4  # trained MLP weights stay far below 1; beyond this training has diverged
    MIN_CATALOGUE_SPREAD = 1e-4

    def __init__(self, config, model):
        super().__init__(config, model)
        self.validations_per_epoch = config["validations_per_epoch"] or 1
        self.eval_step = 1
        # The authors stop at the stopping_step-th validation in a row without improvement;
        # RecBole's early_stopping stops one later (when its counter exceeds max_step).
        self.stopping_step = config["stopping_step"] - 1
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda validations: config["lr_decay_per_validation"] ** validations
        )
        self.curve: list[dict] = []
        self.optimizer_steps = 0
        self._rounds: list[int] = []
        self._batches = None
        self._round_stats: dict = {}
        self._round_idx = 0
        self._epoch_start_loader_state: torch.Tensor | None = None

    def _build_optimizer(self, **kwargs):
        if (kwargs.get("learner") or self.learner).lower() != "adam":
            return super()._build_optimizer(**kwargs)
        return torch.optim.Adam(
            kwargs.get("params", self.model.parameters()),
            lr=kwargs.get("learning_rate", self.learning_rate),
            betas=tuple(self.config["adam_betas"]),
            weight_decay=kwargs.get("weight_decay", self.weight_decay),
        )

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        # RecBole's loop runs one "epoch" per validation round: epochs x rounds per epoch.
        self._rounds = validation_rounds(len(train_data), self.validations_per_epoch)
        self.epochs = self.config["epochs"] * len(self._rounds)
        self.optimizer_steps = sum(self._rounds[done % len(self._rounds)] for done in range(self.start_epoch))
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

    def _resume_state(self, round_idx: int, train_data) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, state = super()._resume_state(round_idx, train_data)
        tensors["rng.loader_epoch_start"] = self._epoch_start_loader_state
        state.update(scheduler=self.scheduler.state_dict(), curve=self.curve)
        return tensors, state

    def resume_checkpoint(self, resume_file):
        super().resume_checkpoint(resume_file)
        _, state = self._resume_from
        self.scheduler.load_state_dict(state["scheduler"])
        self.curve = state["curve"]

    def _training_state(self, finished: bool) -> dict:
        state = super()._training_state(finished)
        if finished:  # an unfinished run keeps its curve in the resume state
            state["curve"] = self.curve
        return state

    def load_finished(self, checkpoint: str) -> dict:
        training = super().load_finished(checkpoint)
        self.curve = training.get("curve") or []  # absent from checkpoints written before it was kept
        return training

    def _restore_loader(self, train_data, tensors: dict[str, torch.Tensor], state: dict) -> None:
        """Mid-epoch: replay the epoch's shuffle from its start and skip the batches already trained on."""
        within = self.start_epoch % len(self._rounds)
        if within == 0:
            return super()._restore_loader(train_data, tensors, state)
        self._epoch_start_loader_state = tensors["rng.loader_epoch_start"]
        train_data.generator.set_state(self._epoch_start_loader_state)
        self._batches = iter(train_data)
        for _ in range(sum(self._rounds[:within])):
            next(self._batches)

    def epochs_trained(self) -> float | None:
        last = max(self.train_loss_dict, default=None)
        return super().epochs_trained() if last is None else self.epoch_of_round(last)

    def epoch_of_round(self, round_idx: int) -> float:
        """Training epochs completed at the end of validation round ``round_idx`` (0-based)."""
        full, within = divmod(round_idx, len(self._rounds))
        return full + sum(self._rounds[: within + 1]) / sum(self._rounds)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self._round_idx = epoch_idx
        within = epoch_idx % len(self._rounds)
        if within == 0 or self._batches is None:
            self._epoch_start_loader_state = train_data.generator.get_state()  # a resume replays this epoch's shuffle
            self._batches = iter(train_data)
        cosines: list[torch.Tensor] = []

        def recorded_loss(interaction):
            losses = (loss_func or self.model.calculate_loss)(interaction)
            self._check_finite(losses, self.optimizer_steps + len(cosines) + 1)
            cosines.append(self.model.last_distill_cosine)
            return losses

        round_slice = EpochSlice(train_data, self._rounds[within], self._batches)
        total = super()._train_epoch(round_slice, epoch_idx, loss_func=recorded_loss, show_progress=show_progress)
        self.optimizer_steps += len(round_slice)
        self._check_weights()
        totals = total if isinstance(total, tuple) else (total,)
        self._round_stats = {
            "losses": {name: value / len(round_slice) for name, value in zip(self.LOSS_NAMES, totals)},
            "distill_cosine": torch.stack(cosines).mean().item() if cosines and None not in cosines else None,
        }
        for name, value in self._round_stats["losses"].items():
            self.tensorboard.add_scalar(f"Loss/{name}", value, self.optimizer_steps)
        if self._round_stats["distill_cosine"] is not None:
            self.tensorboard.add_scalar("Train/distill_cosine", self._round_stats["distill_cosine"], self.optimizer_steps)
        return total

    # ------------------------------------------------------------------ training health
    def _check_finite(self, losses, step: int) -> None:
        """Stop at the first non-finite loss term, naming the step and the term (one device sync per step)."""
        terms = torch.stack(losses if isinstance(losses, tuple) else (losses,)).detach()
        if torch.isfinite(terms).all():
            return
        name, value = next((n, v) for n, v in zip(self.LOSS_NAMES, terms.tolist()) if not math.isfinite(v))
        raise TrainingDiverged(
            f"The {name} loss is {value} at optimizer step {step} "
            f"(learning_rate={self.config['learning_rate']}): lower learning_rate."
        )

    def _check_weights(self) -> None:
        """Stop when a trainable tensor has exploded (|w| > ``MAX_WEIGHT``)."""
        for name, tensor in self.model.named_parameters():
            largest = tensor.detach().abs().max().item()
            if not largest <= self.MAX_WEIGHT:
                raise TrainingDiverged(
                    f"Trainable weight {name} reached |w| = {largest:.3g} by optimizer step {self.optimizer_steps} "
                    f"(learning_rate={self.config['learning_rate']}): training diverged; lower learning_rate."
                )

    def _check_catalogue(self) -> None:
        """Stop when every item gets (nearly) the same vector, so every ranking is arbitrary."""
        items = self.model.catalogue_item_vectors()[1:]  # [n_items - 1, d']
        spread = (items - items.mean(0)).norm(dim=1).mean() / items.norm(dim=1).mean().clamp_min(1e-12)
        if spread < self.MIN_CATALOGUE_SPREAD:
            raise TrainingDiverged(
                f"The catalogue collapsed by optimizer step {self.optimizer_steps}: every item vector is the same "
                f"(relative spread {spread:.2g}), so all items score alike. Lower learning_rate, or keep "
                "uniform_weight > 0."
            )

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        stats = self._round_stats
        terms = ", ".join(f"{name}: {value:.4f}" for name, value in stats["losses"].items())
        cosine = stats["distill_cosine"]
        return (
            f"validation round {epoch_idx} (epoch {self.epoch_of_round(epoch_idx):.2f}, step {self.optimizer_steps}) "
            f"training [time: {e_time - s_time:.2f}s, mean loss per batch: {terms}"
            + (f", cos(u, teacher): {cosine:.4f}" if cosine is not None else "")
            + f", lr: {self.optimizer.param_groups[0]['lr']:.3g}]"
        )

    def _valid_epoch(self, valid_data, show_progress=False):
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self._check_catalogue()  # the item vectors are cached by the validation just run
        round_idx = self._round_idx
        mode = self.config["eval_args"]["mode"]
        self.curve.append({
            "validation": round_idx + 1,
            "mode": mode["valid"] if isinstance(mode, dict) else mode,
            "metric": self.valid_metric,
            "step": self.optimizer_steps,
            "epoch": self.epoch_of_round(round_idx),
            "lr": self.optimizer.param_groups[0]["lr"],
            **self._round_stats,
            "valid_score": float(valid_score),
            "valid": {metric: float(value) for metric, value in valid_result.items()},
        })
        for metric, value in valid_result.items():
            self.tensorboard.add_scalar(f"Valid/{metric}", value, self.optimizer_steps)
        self.scheduler.step()
        return valid_score, valid_result


# The LoRA baselines train on the same schedule, so that their curves compare with LLMSRec's.
TALLRecTrainer = LLaRATrainer = CoLLMTrainer = LLMSRecTrainer


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
