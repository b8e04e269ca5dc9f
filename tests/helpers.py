"""Building blocks for tests: config, data and a ready LLMSRec on the tiny dataset."""

from __future__ import annotations

from recbole.data import create_dataset
from recbole.utils import init_seed

from recbole_llmsrec.config import Config
from recbole_llmsrec.data_preparation import build_dataloaders
from recbole_llmsrec.teacher import train_teacher
from recbole_llmsrec.utils import get_model


def build_llmsrec(settings: dict, **overrides):
    """Config, loaders and an LLMSRec (teacher trained or reused) on the tiny dataset."""
    return build_llm_model("LLMSRec", settings, **overrides)


def build_llm_model(model_name: str, settings: dict, **overrides):
    """Config, loaders and one of the plugin's LLM models (its teacher trained or reused) on the tiny dataset."""
    config = Config(model=model_name, dataset="tiny", config_dict={**settings, **overrides})
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    splits = dataset.build()
    train_data, valid_data, test_data = build_dataloaders(config, dataset, splits)
    if get_model(model_name).uses_teacher and not config["teacher_checkpoint"]:
        path, _ = train_teacher(config, splits, valid_data, test_data)
        config["teacher_checkpoint"] = str(path)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(model_name)(config, splits[0])
    return config, model, (train_data, valid_data, test_data)



class Killed(Exception):
    """Raised from a trainer's validation callback: stands for the process dying after a validation round."""
