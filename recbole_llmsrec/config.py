"""RecBole ``Config`` that finds the plugin's models and layers its ``properties/`` YAMLs."""

from __future__ import annotations

import os
import re
from typing import Any

from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_llmsrec.distributed import init_device
from recbole_llmsrec.utils import get_model, properties_dir


EVAL_MODE = re.compile(r"full|labeled|(uni|pop)[1-9][0-9]*")

# Dict-valued settings merged key by key across YAML defaults, files, config_dict and command
# line, so that `teacher_config: {epochs: 5}` changes one teacher setting and keeps the rest.
MERGED_DICT_KEYS = ("teacher_config",)


class Config(RecBoleConfig):
    """RecBole's configurator with the plugin's model lookup and YAML defaults.

    Priority is RecBole's: command line > ``config_dict`` > config files > plugin YAMLs >
    RecBole YAMLs. The plugin layers the model class's ``shared_property_files`` (the LLM
    recommenders': ``LLMRecommender.yaml``), ``properties/model/<model>.yaml`` and
    ``properties/dataset/<dataset>.yaml`` over RecBole's own defaults.
    """

    def __init__(
        self,
        model: str | type | None = None,
        dataset: str | None = None,
        config_file_list: list[str] | None = None,
        config_dict: dict[str, Any] | None = None,
    ) -> None:
        self.config_file_list = list(config_file_list or [])
        super().__init__(model, dataset, self.config_file_list, config_dict)

    def _init_device(self) -> None:
        # RecBole's distributed branch hard-codes NCCL and CUDA devices.
        if "local_rank" in self.final_config_dict:
            init_device(self.final_config_dict)
        else:
            super()._init_device()

    def compatibility_settings(self) -> None:
        # recbole_llmsrec.compat has restored the numpy aliases; RecBole's version reads
        # ``np.float_``-style names that numpy 2 removed.
        pass

    def _required(self, key: str, given: Any) -> Any:
        value = given if given is not None else self.external_config_dict.get(key)
        if value is None:
            raise KeyError(
                f"No {key} given: pass {key}=..., set `{key}:` in a config file or config_dict, "
                f"or use --{key}=NAME on the command line."
            )
        return value

    def _get_model_and_dataset(self, model: str | type | None, dataset: str | None) -> tuple[str, type, str]:
        model, dataset = self._required("model", model), self._required("dataset", dataset)
        if isinstance(model, str):
            return model, get_model(model), dataset
        return model.__name__, model, dataset

    def _load_internal_config_dict(self, model: str, model_class: type, dataset: str) -> None:
        super()._load_internal_config_dict(model, model_class, dataset)
        properties = properties_dir()
        # a model's shared settings first (the LLM recommenders': LLMRecommender.yaml), then its own
        model_files = [*getattr(model_class, "shared_property_files", ()), f"{model}.yaml"]
        plugin_files = [properties / "model" / name for name in model_files] + [properties / "dataset" / f"{dataset}.yaml"]
        for plugin_file in plugin_files:
            if os.path.isfile(plugin_file):
                self._update_internal_config_dict(str(plugin_file))

    def _set_eval_neg_sample_args(self, phase: str) -> None:
        mode = self.final_config_dict["eval_args"]["mode"][phase]
        if not isinstance(mode, str) or not EVAL_MODE.fullmatch(mode):
            raise ValueError(
                f"eval_args.mode={mode!r} ({phase}) is not a RecBole evaluation mode: use full, uni<N> "
                "(e.g. uni100, the paper's 1 target + 99 uniform negatives), pop<N> or labeled."
            )
        super()._set_eval_neg_sample_args(phase)

    def _get_final_config_dict(self) -> dict[str, Any]:
        final = super()._get_final_config_dict()
        for key in MERGED_DICT_KEYS:
            layers = (self.internal_config_dict, self.file_config_dict, self.variable_config_dict, self.cmd_config_dict)
            merged = {}
            for layer in layers:
                if isinstance(layer.get(key), dict):
                    merged.update(layer[key])
            if merged:
                final[key] = merged
        # RecBole's sequential models default to loss_type CE, which RecBole then rejects beside
        # overall.yaml's default negative sampling; a user who set neither means "no sampling".
        if (
            final.get("MODEL_TYPE") == ModelType.SEQUENTIAL
            and final.get("loss_type") == "CE"
            and "train_neg_sample_args" not in self.external_config_dict
        ):
            final["train_neg_sample_args"] = None
        return final


class PriorityDictConfig(Config):
    """A ``Config`` whose ``config_dict`` outranks the command line.

    The teacher stage builds its config from the user's files and command line, but its
    own training settings (``teacher_config``) must win over flags meant for LLMSRec,
    such as ``--epochs=1``.
    """

    def _merge_external_config_dict(self) -> None:
        super()._merge_external_config_dict()
        self.external_config_dict.update(self.variable_config_dict)
