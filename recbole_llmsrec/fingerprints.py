"""Fingerprints of what a checkpoint was trained on: the data, the teacher and the LLM.

A checkpoint stores them in its metadata; loading it into a run whose data, teacher or LLM
differ is refused, naming the part (a model of the same shape would load silently and
score wrongly).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

PARTS = {
    "data": "the training data (item and user tokens, training interactions)",
    "teacher": "the teacher checkpoint",
    "llm": "the LLM (config and weights)",
}
WEIGHT_SAMPLES = 4096  # elements hashed per LLM tensor: seconds for billions of weights, yet any retraining shows


def data_fingerprint(train_dataset) -> str:
    """Hash of a built training split: its item and user tokens and the rows it trains on."""
    digest = hashlib.sha256()
    for field in (train_dataset.iid_field, train_dataset.uid_field):
        digest.update("\n".join(map(str, train_dataset.field2id_token[field])).encode())
    inter = train_dataset.inter_feat
    for field in (train_dataset.uid_field, train_dataset.iid_field, train_dataset.time_field):
        if field and field in inter.columns:
            digest.update(np.asarray(inter[field]).tobytes())  # a torch column, or pandas before RecBole's conversion
    return digest.hexdigest()[:16]


def file_fingerprint(path: str | Path) -> str:
    """Hash of a file's bytes (a teacher checkpoint is a few MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def llm_fingerprint(llm: torch.nn.Module, added_tokens_from: int) -> str:
    """Hash of an LLM's config and of up to ``WEIGHT_SAMPLES`` evenly spaced elements of every tensor.

    The embedding rows from ``added_tokens_from`` on (the plugin's own tokens, drawn at load)
    and the vocabulary size they changed are left out, and so is where the model was loaded
    from: a moved copy matches.
    """
    ignored = ("_name_or_path", "transformers_version", "vocab_size")
    settings = {key: value for key, value in llm.config.to_dict().items() if key not in ignored}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    embedding = llm.get_input_embeddings().weight
    with torch.no_grad():
        for name, tensor in sorted(llm.state_dict().items()):
            if tensor.data_ptr() == embedding.data_ptr():
                tensor = tensor[:added_tokens_from]
            flat = tensor.detach().flatten()
            step = max(1, flat.numel() // WEIGHT_SAMPLES)
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(flat[::step].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def stamp_training_data(trainer, train_dataset) -> None:
    """Give a plugin trainer's checkpoints the fingerprint of ``train_dataset`` unless its model
    brings its own (LLMSRec); RecBole's special trainers write their own files and are skipped."""
    if hasattr(trainer, "fingerprints") and "data" not in trainer.fingerprints:  # LLMSRec's is already there
        trainer.fingerprints["data"] = data_fingerprint(train_dataset)


def check_fingerprints(stored: dict[str, str] | None, current: dict[str, str], what: str) -> None:
    """Refuse ``what`` (a checkpoint) when a part both sides fingerprint differs.

    Raises:
        ValueError: naming every differing part and the fix.
    """
    differing = [part for part in PARTS if part in (stored or {}) and part in current and stored[part] != current[part]]
    if differing:
        parts = "; ".join(f"{PARTS[part]} (stored {stored[part]}, now {current[part]})" for part in differing)
        raise ValueError(
            f"{what} was trained on something else than this run: {parts}. Use the data, teacher_checkpoint and "
            "llm_path it was trained with, or train a new model."
        )
