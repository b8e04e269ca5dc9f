"""The RecBole compatibility layer and the plugin's config/model/trainer lookup."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed

from recbole_llmsrec import compat
from recbole_llmsrec.config import Config
from recbole_llmsrec.model.sequential_recommender import LLMSRec
from recbole_llmsrec.trainer import LLMSRecTrainer
from recbole_llmsrec.utils import get_model, get_trainer

from conftest import DATA_DIR


def test_numpy_aliases_restored_for_recbole_metrics():
    from recbole.evaluator.metrics import NDCG

    assert np.float is np.float64 and np.long is np.int_ and np.bool is np.bool_
    pos_index = np.array([[False, True, False]])
    settings = {"data_path": str(DATA_DIR), "topk": [3], "metrics": ["NDCG"], "train_neg_sample_args": None}
    ndcg = NDCG(Config("SASRec", "tiny", config_dict=settings))
    # one relevant item at rank 2 of 3, one positive: 1 / log2(3)
    result = ndcg.metric_info(pos_index, np.array([1]))
    assert result[0, 2] == pytest.approx(1 / np.log2(3))


def test_numpy_shim_restores_missing_names(monkeypatch):
    monkeypatch.delattr(np, "float_", raising=False)
    monkeypatch.delattr(np, "float", raising=False)
    compat.add_numpy_aliases()
    assert np.float_ is np.float64 and np.float is np.float64


def test_sine_anomaly_detection_is_switched_off():
    import recbole.model.sequential_recommender.sine  # noqa: F401  (calls set_detect_anomaly(True) at import)

    assert not torch.is_anomaly_enabled()
    torch.autograd.set_detect_anomaly(True)
    try:
        compat.import_sequential_models_without_anomaly_detection()
        assert torch.is_anomaly_enabled()  # restores the previous setting, does not force it
    finally:
        torch.autograd.set_detect_anomaly(False)


def test_recbole_trainer_reloads_its_pickled_checkpoint(tmp_path):
    """torch >= 2.6 refuses RecBole's checkpoints (a pickled Config) without the shim."""
    config = Config(
        "SASRec", "tiny",
        config_dict={"data_path": str(DATA_DIR), "checkpoint_dir": str(tmp_path), "epochs": 1, "hidden_size": 8,
                     "inner_size": 16, "n_heads": 1, "train_neg_sample_args": None, "state": "ERROR",
                     "show_progress": False, "load_col": {"inter": ["user_id", "item_id", "timestamp"]}},
    )
    init_seed(config["seed"], True)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = SASRec(config, train_data._dataset)
    trainer = Trainer(config, model)
    trainer.fit(train_data, valid_data, saved=True)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.item_embedding.weight.zero_()
    result = trainer.evaluate(test_data, load_best_model=True)
    assert "ndcg@10" in result
    assert torch.equal(model.item_embedding.weight, expected["item_embedding.weight"])

    import recbole.trainer.trainer as recbole_trainer

    original = recbole_trainer.torch
    recbole_trainer.torch = torch
    try:
        with pytest.raises(Exception, match="weights_only"):
            trainer.evaluate(test_data, load_best_model=True)
    finally:
        recbole_trainer.torch = original


def test_get_model_prefers_plugin_and_falls_back_to_recbole():
    assert get_model("LLMSRec") is LLMSRec
    assert get_model("SASRec") is SASRec
    assert get_model("GRU4Rec").__name__ == "GRU4Rec"


def test_unknown_model_error_lists_models():
    with pytest.raises(ValueError) as error:
        get_model("SASRex")
    message = str(error.value)
    assert "Unknown model 'SASRex'" in message and "sasrec" in message and "llmsrec" in message
    with pytest.raises(ValueError, match="case-sensitive"):
        get_model("sasrec")


def test_get_trainer():
    from recbole.utils import ModelType

    assert get_trainer(ModelType.SEQUENTIAL, "LLMSRec") is LLMSRecTrainer
    from recbole.trainer import KGATTrainer

    from recbole_llmsrec.trainer import SafetensorsCheckpointTrainer

    assert get_trainer(ModelType.SEQUENTIAL, "SASRec") is SafetensorsCheckpointTrainer  # RecBole's Trainer, pickle-free
    assert issubclass(SafetensorsCheckpointTrainer, Trainer)
    assert get_trainer(ModelType.KNOWLEDGE, "KGAT") is KGATTrainer  # special trainers stay RecBole's


def test_config_layers_plugin_yamls_and_merges_teacher_config():
    config = Config("LLMSRec", "ml-100k", config_dict={"teacher_config": {"epochs": 7}})
    assert config["history_length"] == 10 and config["adam_betas"] == [0.9, 0.98]
    assert config["item_text_field"] == "movie_title"  # properties/dataset/ml-100k.yaml
    assert config["load_col"]["item"] == ["item_id", "movie_title"]
    assert config["teacher_config"]["epochs"] == 7 and config["teacher_config"]["hidden_size"] == 64
    sasrec = Config("SASRec", "ml-100k")
    assert sasrec["history_length"] is None and sasrec["n_heads"] == 2  # RecBole's own defaults untouched


def test_sequential_ce_models_need_no_negative_sampling_setting():
    config = Config("GRU4Rec", "ml-100k")
    assert config["train_neg_sample_args"]["distribution"] == "none"
    with pytest.raises(ValueError, match="should be None when the loss_type is CE"):
        Config("SASRec", "ml-100k", config_dict={"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}})


def test_missing_model_or_dataset_is_explained():
    with pytest.raises(KeyError, match="No model given"):
        Config(dataset="ml-100k")
    with pytest.raises(KeyError, match="No dataset given"):
        Config(model="SASRec")
