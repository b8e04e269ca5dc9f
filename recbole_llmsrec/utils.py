"""Model and trainer lookup that knows the plugin's models and falls back to RecBole's."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from pathlib import Path

import recbole.model
import recbole.trainer
import recbole.utils
from recbole.utils import ModelType

PLUGIN_MODEL_SUBMODULES = ("sequential_recommender",)
RECBOLE_MODEL_SUBMODULES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


def properties_dir() -> Path:
    """Folder of the plugin's YAML defaults: inside the installed package, else the source tree."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "properties", package_dir.parent / "properties"):
        if (candidate / "model").is_dir():
            return candidate
    raise FileNotFoundError(
        f"recbole_llmsrec's properties/ folder is missing (looked in {package_dir} and its parent); "
        "reinstall the package with `pip install .`"
    )


def _module_names(package_path: Path) -> list[str]:
    return [info.name for info in pkgutil.iter_modules([str(package_path)]) if not info.name.startswith("_")]


def _plugin_model_class(model_name: str) -> type | None:
    for submodule in PLUGIN_MODEL_SUBMODULES:
        module_path = f"recbole_llmsrec.model.{submodule}.{model_name.lower()}"
        if importlib.util.find_spec(module_path) is not None:
            return getattr(importlib.import_module(module_path), model_name, None)
    return None


def available_models() -> list[str]:
    """Every model name this plugin's lookup accepts (module names; classes are CamelCase)."""
    plugin_root = Path(__file__).resolve().parent / "model"
    recbole_root = Path(recbole.model.__file__).resolve().parent
    names = []
    for submodule in PLUGIN_MODEL_SUBMODULES:
        names += _module_names(plugin_root / submodule)
    for submodule in RECBOLE_MODEL_SUBMODULES:
        names += _module_names(recbole_root / submodule)
    return sorted(set(names))


def _recbole_has_module(model_name: str) -> bool:
    # Looks at files only: importing exlib_recommender pulls lightgbm/xgboost.
    recbole_root = Path(recbole.model.__file__).resolve().parent
    return any((recbole_root / sub / f"{model_name.lower()}.py").is_file() for sub in RECBOLE_MODEL_SUBMODULES)


def get_model(model_name: str) -> type:
    """Model class for ``model_name``: the plugin's first, then RecBole's.

    Raises:
        ValueError: the name matches no model; the message lists the close matches.
    """
    model_class = _plugin_model_class(model_name)
    if model_class is not None:
        return model_class
    if _recbole_has_module(model_name):
        try:
            return recbole.utils.get_model(model_name)
        except AttributeError:
            pass
    known = available_models()
    close = difflib.get_close_matches(model_name.lower(), known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}? (class names are case-sensitive, e.g. SASRec)" if close else ""
    raise ValueError(
        f"Unknown model {model_name!r}.{hint} Known models (module names): {', '.join(known)}."
    )


def get_trainer(model_type: ModelType, model_name: str) -> type:
    """Trainer class for a model: ``recbole_llmsrec.trainer.<model_name>Trainer`` if it exists, else
    RecBole's; where that is RecBole's plain ``Trainer``, its pickle-free (safetensors) version."""
    plugin_trainers = importlib.import_module("recbole_llmsrec.trainer")
    trainer = getattr(plugin_trainers, f"{model_name}Trainer", None)
    if trainer is not None:
        return trainer
    trainer = recbole.utils.get_trainer(model_type, model_name)
    return plugin_trainers.SafetensorsCheckpointTrainer if trainer is recbole.trainer.Trainer else trainer
