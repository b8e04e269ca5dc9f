"""Run a model through the plugin: RecBole's ``run_recbole`` without ray, FLOP counting or model copies.

For the models that read a CF teacher (LLMSRec, LLaRA, CoLLM) the teacher stage runs first (trained
once per dataset, split and teacher config, then reused), and both models are evaluated side
by side, with RecBole's Pop as the floor, on valid and test, in full ranking and in the paper's
1 target + 99 sampled negatives.

:func:`run` is RecBole's ``run``: one process, or ``nproc`` processes on RecBole's
distributed path (:mod:`recbole_llmsrec.distributed`).
"""

from __future__ import annotations

import logging
from logging import getLogger
from typing import Any

import torch.multiprocessing as mp
from recbole.data import create_dataset
from recbole.trainer import Trainer
from recbole.utils import ModelType, init_logger, init_seed, set_color

from recbole_llmsrec.checkpoint import read_metadata, load_checkpoint
from recbole_llmsrec.config import Config
from recbole_llmsrec.data_preparation import build_dataloaders, data_preparation
from recbole_llmsrec.distributed import end_process_group, is_main_process
from recbole_llmsrec.fingerprints import data_fingerprint, stamp_training_data
from recbole_llmsrec.model.abstract_recommender import LLMRecommender
from recbole_llmsrec.teacher import cf_budget, sibling_config, teacher_config, train_teacher
from recbole_llmsrec.trainer import SafetensorsCheckpointTrainer
from recbole_llmsrec.utils import get_model, get_trainer, properties_dir
from recbole_llmsrec.validation import check_inputs

PROFILE_MODEL = "LLMSRec"  # whose settings (data, split, evaluation, teacher) a comparison's rows share
COMPARISON_MODES = ("full", "uni100")
COMPARISON_METRICS = ("ndcg@10", "ndcg@20", "hit@10", "hit@20")


def is_llm_model(name: str) -> bool:
    """Whether ``name`` is one of the plugin's LLM recommenders (LLMSRec, TALLRec, LLaRA, CoLLM)."""
    return issubclass(get_model(name), LLMRecommender)


def uses_teacher(name: str) -> bool:
    """Whether the model ``name`` reads a frozen CF teacher (LLMSRec, LLaRA, CoLLM), trained first."""
    return getattr(get_model(name), "uses_teacher", False)


def default_config_files() -> list[str]:
    """The default quick-start profile (LLMSRec on a slice of ml-100k, ~10 min on 2 cores)."""
    return [str(properties_dir() / "quick_start" / "ml-100k.yaml")]


def mode_config(config: Config, mode: str) -> Config:
    """The run's config with evaluation mode ``mode`` (``full``, ``uni100``, ...) for valid and test."""
    eval_args = dict(config["eval_args"], mode=mode)
    settings = dict(config.variable_config_dict, eval_args=eval_args, teacher_checkpoint=config["teacher_checkpoint"])
    return Config(config["model"], config["dataset"], config.config_file_list, settings)


def evaluate_in_modes(config: Config, dataset, splits: list, trainers: dict[str, Trainer]) -> dict[str, dict[str, dict]]:
    """Valid and test results of each trainer's model in full and sampled (uni100) ranking.

    Every model sees the same split and, reseeded per pass, the same sampled negatives.
    """
    results: dict[str, dict[str, dict]] = {name: {} for name in trainers}
    for mode in COMPARISON_MODES:
        config_for_mode = mode_config(config, mode)
        _, valid_data, test_data = build_dataloaders(config_for_mode, dataset, splits)
        for name, trainer in trainers.items():
            for phase, data in (("valid", valid_data), ("test", test_data)):
                init_seed(config["seed"], config["reproducibility"])
                result = trainer.evaluate(data, load_best_model=False, show_progress=config["show_progress"])
                results[name][f"{phase} {mode}"] = dict(result)
    return results


def fit_popularity(config: Config, settings: dict[str, Any] | None = None) -> tuple[Config, Any, list, Trainer]:
    """RecBole's ``Pop`` trained on the run's data, split and seed, at the CF baselines' budget
    (``settings`` on top): its config, dataset, splits and trainer.

    It is the ``Pop`` row of ``--compare``: every training interaction counts, not only the LLM
    model's training samples. The batch size matters: RecBole's Pop counts an item at most
    once per training batch (``benchmarks/pop_batch.py``).
    """
    pop_config = sibling_config(config, "Pop", {**cf_budget(config), **(settings or {})})
    dataset = create_dataset(pop_config)
    splits = dataset.build()
    train_data = build_dataloaders(pop_config, dataset, splits)[0]
    init_seed(pop_config["seed"], pop_config["reproducibility"])
    model = get_model("Pop")(pop_config, splits[0]).to(pop_config["device"])
    trainer = get_trainer(pop_config["MODEL_TYPE"], "Pop")(pop_config, model)
    trainer.fit(train_data, saved=False, show_progress=False)
    return pop_config, dataset, splits, trainer


def popularity_results(config: Config) -> dict[str, dict[str, dict]]:
    """:func:`fit_popularity`'s Pop in :func:`evaluate_in_modes`'s form (same sampled negatives): the floor of the table."""
    pop_config, dataset, splits, trainer = fit_popularity(config)
    return evaluate_in_modes(pop_config, dataset, splits, {"Pop": trainer})


def format_comparison(results: dict[str, dict[str, dict]]) -> str:
    """A plain-text table: one row per model and phase/mode, one column per metric."""
    header = f"{'model':<10} {'split / ranking':<16}" + "".join(f"{m:>10}" for m in COMPARISON_METRICS)
    lines = [header, "-" * len(header)]
    for name, by_setting in results.items():
        for setting, metrics in by_setting.items():
            row = "".join(f"{metrics.get(m, float('nan')):>10.4f}" for m in COMPARISON_METRICS)
            lines.append(f"{name:<10} {setting:<16}{row}")
    return "\n".join(lines)


def run_recbole_llmsrec(
    model: str | None = None,
    dataset: str | None = None,
    config_file_list: list[str] | None = None,
    config_dict: dict[str, Any] | None = None,
    saved: bool = True,
    resume: str | None = None,
) -> dict[str, Any]:
    """Train and evaluate one model, like RecBole's ``run_recbole``.

    ``resume``: the checkpoint of an unfinished run, continued with its own settings (the
    other arguments are ignored) to the result the uninterrupted run would have reached.

    Returns ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result`` and
    ``test_result``; for LLMSRec also ``teacher_checkpoint``, ``teacher_result`` and
    ``comparison`` (Pop, the teacher and LLMSRec, valid/test, full/uni100).
    """
    if resume:
        settings = read_metadata(resume)["config"]
        model, dataset, config_file_list, config_dict = settings["model"], settings["dataset"], None, settings
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    if is_main_process():  # one log file per run, not per rank
        init_logger(config)
    else:
        logging.basicConfig(level=logging.ERROR)
    logger = getLogger()
    logger.info(config)

    data = create_dataset(config)
    logger.info(data)
    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        train_data, valid_data, test_data = data_preparation(config, data)
        model_dataset = train_data._dataset
    else:
        splits = data.build()
        train_data, valid_data, test_data = build_dataloaders(config, data, splits)
        model_dataset = splits[0]  # the whole training split, even when training on one sample per user

    extra: dict[str, Any] = {}
    if is_llm_model(config["model"]):
        check_inputs(config, model_dataset, splits[1])  # before minutes of teacher training
    if uses_teacher(config["model"]) and not config["teacher_checkpoint"]:
        teacher_path, teacher_result = train_teacher(config, splits, valid_data, test_data)
        config["teacher_checkpoint"] = str(teacher_path)
        extra.update(teacher_checkpoint=str(teacher_path), teacher_result=teacher_result)

    model_class = get_model(config["model"])
    # RecBole seeds each rank apart; a model that reads the global batch must draw alike on every rank
    rank_seed = 0 if getattr(model_class, "reads_global_batch", False) else config["local_rank"]
    init_seed(config["seed"] + rank_seed, config["reproducibility"])
    recommender = model_class(config, model_dataset).to(config["device"])
    logger.info(recommender)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, recommender)
    stamp_training_data(trainer, model_dataset)
    if resume:
        trainer.resume_checkpoint(resume)

    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    init_seed(config["seed"], config["reproducibility"])  # sampled negatives as in evaluate_in_modes
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")

    trainers = {config["model"]: trainer}
    if uses_teacher(config["model"]):
        teacher_trainer = SafetensorsCheckpointTrainer(teacher_config(config), recommender.teacher)
        trainers = {config["teacher_model"]: teacher_trainer, **trainers}
        extra["comparison"] = {**popularity_results(config), **evaluate_in_modes(config, data, splits, trainers)}
        logger.info("Side by side (same split, same sampled negatives):\n" + format_comparison(extra["comparison"]))

    if not config["single_spec"]:
        end_process_group(*trainers.values())
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "saved_model_file": trainer.saved_model_file if saved else None,
        **extra,
    }


def run(
    model: str | None = None,
    dataset: str | None = None,
    config_file_list: list[str] | None = None,
    config_dict: dict[str, Any] | None = None,
    saved: bool = True,
    nproc: int = 1,
    world_size: int = -1,
    ip: str = "localhost",
    port: str = "5678",
    group_offset: int = 0,
) -> dict[str, Any] | None:
    """RecBole's ``run``: :func:`run_recbole_llmsrec` in this process, or on ``nproc`` processes.

    With ``nproc > 1`` (or ``world_size`` set, for several machines) this machine starts
    ``nproc`` ranks, ``group_offset`` to ``group_offset + nproc - 1`` of ``world_size``, which
    meet at ``ip:port`` (rank 0's machine). A rank that fails stops every rank of this machine
    and its error is raised here. Returns rank 0's result (None on other machines).
    """
    if nproc == 1 and world_size <= 0:
        return run_recbole_llmsrec(model, dataset, config_file_list, config_dict, saved)
    settings = dict(config_dict or {}, world_size=nproc if world_size == -1 else world_size,
                    ip=ip, port=str(port), nproc=nproc, offset=group_offset)
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_run_rank, args=(model, dataset, config_file_list, settings, saved, queue), nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()


def _run_rank(local_rank: int, model, dataset, config_file_list, settings: dict, saved: bool, queue) -> None:
    result = run_recbole_llmsrec(model, dataset, config_file_list, dict(settings, local_rank=local_rank), saved)
    if local_rank + settings["offset"] == 0:
        queue.put(result)


def load_data_and_model(model_file: str) -> tuple:
    """Rebuild config, data, model and trainer from an LLMSRec checkpoint (no unpickling).

    Returns ``(config, model, dataset, train_data, valid_data, test_data)`` like RecBole's.
    """
    settings = read_metadata(model_file)["config"]
    config = Config(model=settings["model"], dataset=settings["dataset"], config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    logging.getLogger().setLevel(logging.WARNING)
    dataset = create_dataset(config)
    splits = dataset.build()
    train_data, valid_data, test_data = build_dataloaders(config, dataset, splits)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, splits[0]).to(config["device"])
    fingerprints = getattr(model, "fingerprints", None) or {"data": data_fingerprint(splits[0])}
    training = load_checkpoint(model_file, model, fingerprints)["training"]
    if training and training.get("finished") is False:
        logging.getLogger(__name__).warning(
            "%s is the checkpoint of an unfinished run: these are its best weights so far. "
            "`run_recbole_llmsrec.py --resume=%s` continues it.", model_file, model_file)
    return config, model, dataset, train_data, valid_data, test_data
