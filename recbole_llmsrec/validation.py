"""Checks of an LLMSRec run's settings and data, made before any teacher or LLM training starts.

Each problem is refused with a message that names the key (or field) and the fix, instead of
a traceback minutes into a run.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from recbole_llmsrec.llm import load_tokenizer, quantization_config, resolve_dtype, resolve_llm_path, warn_if_cpu_emulates
from recbole_llmsrec.prompts import PromptBuilder, item_titles

logger = logging.getLogger(__name__)

DISTILL_REDUCTIONS = ("mean", "sum")
DISTILL_LOSSES = ("mse", "contrastive")
USER_READOUTS = ("user_out", "last_history")
# Unix seconds between 1973 and 2286: a time field outside this range is not a date.
UNIX_SECONDS = (1e8, 1e10)


def _positive_int(config, key: str) -> None:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={value!r} must be a positive integer.")


def check_settings(config) -> None:
    """Refuse LLMSRec settings that cannot work.

    Raises:
        ValueError: naming the key, the value and what is allowed.
    """
    for key in ("history_length", "num_negatives", "validations_per_epoch", "max_prompt_tokens", "max_title_tokens"):
        _positive_int(config, key)
    for key, choices in (("distill_reduction", DISTILL_REDUCTIONS), ("distill_loss", DISTILL_LOSSES),
                         ("user_readout", USER_READOUTS)):
        if config[key] is not None and config[key] not in choices:
            raise ValueError(f"{key}={config[key]!r} is not one of {', '.join(choices)}.")
    temperature = config["distill_temperature"]
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                    or temperature <= 0):
        raise ValueError(f"distill_temperature={temperature!r} must be a positive number (e.g. 0.1).")
    quantization_config(config["llm_quantization"], config["device"], torch.float32)  # before the teacher trains
    resolve_dtype(config["llm_dtype"], config["device"])
    decay = config["lr_decay_per_validation"]
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise ValueError(f"lr_decay_per_validation={decay!r} must be in (0, 1] (1 keeps the learning rate).")


def timestamps_are_unix_seconds(dataset) -> bool:
    """Whether the dataset's time field reads as unix seconds (between 1973 and 2286), so prompts can show dates."""
    field = dataset.time_field
    if field is None or field not in dataset.inter_feat.columns:
        return False
    times = dataset.inter_feat[field].numpy()
    return bool(len(times)) and bool(np.all((times >= UNIX_SECONDS[0]) & (times < UNIX_SECONDS[1])))


def check_inputs(config, dataset, valid_dataset=None) -> None:
    """Refuse settings and data LLMSRec cannot work with; warn when dates will be left out and when
    the CPU can only emulate the asked ``llm_dtype``.

    ``dataset`` is the training split, ``valid_dataset`` the validation split (if built).

    Raises:
        ValueError: a setting out of range (:func:`check_settings`), ``item_text_field``
            not a loaded item field (from :func:`item_titles`), ``max_prompt_tokens`` too small
            for the prompt template, or no validation interaction.
        FileNotFoundError: ``llm_path`` does not exist.
    """
    check_settings(config)
    warn_if_cpu_emulates(config["llm_dtype"], config["device"])
    titles = item_titles(dataset, config["item_text_field"])
    # The tokenizer alone (seconds): a wrong llm_path or a max_prompt_tokens too small for the
    # prompt template fail here, not after the teacher has trained.
    PromptBuilder(load_tokenizer(resolve_llm_path(config["llm_path"])), titles, history_length=config["history_length"],
                  max_prompt_tokens=config["max_prompt_tokens"], max_title_tokens=config["max_title_tokens"])
    if valid_dataset is not None and len(valid_dataset.inter_feat) == 0:
        raise ValueError(
            f"No user of dataset {config['dataset']!r} has a validation interaction under eval_args.split="
            f"{config['eval_args']['split']}: early stopping and model selection need some. Keep users with at "
            "least 3 interactions (e.g. user_inter_num_interval: \"[3,inf)\") or change the split."
        )
    if config["prompt_dates"] and not timestamps_are_unix_seconds(dataset):
        logger.warning(
            "The time field %r does not hold unix seconds (1973-2286): prompts leave dates out. Convert the "
            "timestamps to seconds (e.g. from milliseconds), or set prompt_dates: False to silence this.",
            dataset.time_field,
        )
