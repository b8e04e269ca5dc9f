"""Compare models on identical data, and probe how they use the order of the history.

``run_comparison`` trains every model of ``--compare`` on the same filtering, split and
seed, evaluates valid and test in full ranking and in 1 target + 99 sampled negatives
(same negatives for every model, via :func:`recbole_llmsrec.quick_start.evaluate_in_modes`),
runs the requested probes (:mod:`recbole_llmsrec.probes`) on the trained model, and writes:

- ``<results>/<dataset>/<profile>/<model>-seed<seed>.json``: one file per finished model
  and seed, written atomically; a rerun skips what is there (resume);
- beside it, until a model's row is written, ``<model>-seed<seed>.train.running.json`` naming
  its checkpoint: a rerun of an interrupted comparison continues that training from its last
  validation (the checkpoint's resume state) instead of starting it again, or, when the
  training had finished, evaluates its checkpoint;
- through :mod:`recbole_llmsrec.reports`, the comparison table and chart, one table and
  chart per probe, and the learning curves (``<results>/<dataset>/<profile>.*``).

Models are RecBole or plugin model names, optionally with settings,
``LLMSRec[distill_weight=0,uniform_weight=0]``, or a preset of :data:`PRESETS`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from recbole.data import create_dataset
from recbole.trainer import Trainer
from recbole.utils import init_logger, init_seed

from recbole_llmsrec import probes
from recbole_llmsrec.checkpoint import read_metadata, rebuild_config_dict
from recbole_llmsrec.config import Config
from recbole_llmsrec.data_preparation import build_dataloaders
from recbole_llmsrec.fingerprints import stamp_training_data
from recbole_llmsrec.memory import PeakMemory
from recbole_llmsrec.quick_start import (
    COMPARISON_METRICS,
    COMPARISON_MODES,
    PROFILE_MODEL,
    is_llm_model,
    uses_teacher,
    mode_config,
    evaluate_in_modes,
)
from recbole_llmsrec.reports import write_reports
from recbole_llmsrec.teacher import SHARED_KEYS, cf_budget, teacher_config, train_teacher
from recbole_llmsrec.trainer import SafetensorsCheckpointTrainer, TeacherTrainer
from recbole_llmsrec.utils import get_model, get_trainer, properties_dir
from recbole_llmsrec.validation import check_inputs

logger = logging.getLogger(__name__)

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "LLMSRec-noDU": ("LLMSRec", {"distill_weight": 0.0, "uniform_weight": 0.0}),
    "LLMSRec-noU": ("LLMSRec", {"uniform_weight": 0.0}),
    "LLMSRec-randomLLM": ("LLMSRec", {"llm_random_weights": True}),
}
PROBES = ("shuffle", "train_shuffle", "similarity", "breakdown")
TRAINING_PROBES = ("train_shuffle",)  # probes that train their own model
# Settings that change what a run shows, not what it computes: a rerun that differs from an
# interrupted training only in these still continues it.
PRESENTATION_KEYS = frozenset({"show_progress", "state"})
RESULT_FORMAT = "recbole_llmsrec.compare/2"  # 2: authors' schedule, whole-prompt tokens, SASRec row = teacher


# ---------------------------------------------------------------------- model specs
@dataclass(frozen=True)
class ModelSpec:
    """One row of a comparison: a label, the model class name and its config overrides."""

    label: str
    model: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """File-name-safe form of the label."""
        return re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.label).strip("_")


def split_model_list(text: str) -> list[str]:
    """Split ``"A,B[x=1,y=2],C"`` on the commas outside brackets."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth < 0:
            raise ValueError(f"Unbalanced ']' in --compare={text!r}.")
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if depth:
        raise ValueError(f"Unclosed '[' in --compare={text!r}.")
    parts.append(current.strip())
    return [part for part in parts if part]


def parse_model_spec(text: str) -> ModelSpec:
    """``Name``, ``Name[key=value,...]`` (values read as YAML) or a preset name.

    Raises:
        ValueError: malformed settings, or a name that is neither a preset nor a model.
    """
    match = re.fullmatch(r"([A-Za-z0-9_-]+)(?:\[(.*)\])?", text.strip())
    if not match:
        raise ValueError(f"Bad model spec {text!r}: expected Name or Name[key=value,...].")
    name, settings = match.group(1), match.group(2)
    model, overrides = PRESETS.get(name, (name, {}))
    overrides = dict(overrides)
    for item in split_model_list(settings or ""):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Bad setting {item!r} in {text!r}: expected key=value.")
        overrides[key.strip()] = yaml.safe_load(value)
    get_model(model)  # raises ValueError for unknown names
    return ModelSpec(label=text.strip(), model=model, overrides=overrides)


def parse_model_specs(text: str) -> list[ModelSpec]:
    """Model specs of ``--compare`` (see :func:`parse_model_spec`); labels must be distinct."""
    specs = [parse_model_spec(part) for part in split_model_list(text)]
    if not specs:
        raise ValueError("--compare needs at least one model.")
    labels = [spec.label for spec in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--compare lists a model twice: {labels}.")
    return specs


def parse_probes(text: str | None) -> list[str]:
    """Probe names of ``--probes`` (comma-separated, or ``all``)."""
    if not text:
        return []
    names = list(PROBES) if text.strip() == "all" else [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PROBES]
    if unknown:
        raise ValueError(f"Unknown probe(s) {unknown}: choose from {', '.join(PROBES)} or all.")
    return names


def resolve_profile(dataset: str | None, config_files: list[str] | None) -> tuple[list[str], str]:
    """Config files and profile name: the given files (profile = last file's stem), else the
    quick-start profile of ``dataset`` if the plugin has one, else none (profile ``default``)."""
    if config_files:
        return list(config_files), Path(config_files[-1]).stem
    quick_start = properties_dir() / "quick_start" / f"{dataset or 'ml-100k'}.yaml"
    if quick_start.is_file():
        return [str(quick_start)], quick_start.stem
    return [], "default"


# ---------------------------------------------------------------------- one model, one seed
def model_settings(spec: ModelSpec, dataset: str | None, config_files: list[str], seed: int) -> dict[str, Any]:
    """``config_dict`` of one comparison run.

    Every model gets LLMSRec's data, split and evaluation settings under the profile (the
    keys its teacher shares with it: filtering, columns, ``eval_args``, metrics, ...), so
    that RecBole's own defaults (e.g. a random 8:1:1 split) never differ between rows. A
    CF model trains on the whole training split with the profile's teacher budget
    (:func:`~recbole_llmsrec.teacher.cf_budget`). The spec's overrides come last.
    """
    settings: dict[str, Any] = {}
    if spec.model != PROFILE_MODEL:
        llm_config = Config(model=PROFILE_MODEL, dataset=dataset, config_file_list=config_files)
        settings.update({key: llm_config[key] for key in SHARED_KEYS if llm_config[key] is not None})
        if not is_llm_model(spec.model):
            settings.update(cf_budget(llm_config))
    settings["seed"] = seed
    settings.update(spec.overrides)
    return settings


def teacher_row_config(spec: ModelSpec, dataset: str | None, config_files: list[str], seed: int) -> Config | None:
    """LLMSRec's config when ``spec`` is a plain row of its teacher model (e.g. ``SASRec``), else None.

    Such a row *is* LLMSRec's teacher: the same config, training and checkpoint, so that
    "LLMSRec vs its teacher" and "LLMSRec vs SASRec" are one question. A row with settings
    (``SASRec[hidden_size=128]``) is a separate model.
    """
    if is_llm_model(spec.model) or spec.overrides:
        return None
    llm_config = Config(model=PROFILE_MODEL, dataset=dataset, config_file_list=config_files, config_dict={"seed": seed})
    return llm_config if llm_config["teacher_model"] == spec.model else None


def shuffle_window(config: Config, model: str) -> int | None:
    """How many latest history items a probe shuffles: what the model reads (LLM models: ``history_length``; others: all)."""
    return config["history_length"] if is_llm_model(model) else None


def _fit(config: Config, model_dataset, train_data, valid_data, marker: Path | None = None) -> tuple[Trainer, float | None]:
    """Train a fresh model, or continue the interrupted training that ``marker`` names, or take
    its finished training (:func:`earlier_training`); return its trainer (best weights not yet
    loaded) and the training's wall time, summed over interrupted parts (None when unknown).

    ``marker`` is written before training starts and names the run's checkpoint, whose resume
    state (after every validation) is what a rerun of the comparison continues from; once the
    training has finished, a rerun interrupted later (test, probes) evaluates that checkpoint.
    The fit's peak memory (:class:`~recbole_llmsrec.memory.PeakMemory`, model loading included;
    None for a finished training taken from its checkpoint) is left in the trainer's ``peak_memory``.
    """
    peak = PeakMemory(config["device"])
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, model_dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    stamp_training_data(trainer, model_dataset)
    resumable = marker is not None and isinstance(trainer, SafetensorsCheckpointTrainer)
    checkpoint, finished = (earlier_training(marker, config) if resumable else None) or (None, False)
    if finished:
        logger.warning("Comparison: evaluating the finished training in %s", checkpoint)
        trainer.load_finished(checkpoint)  # no peak_memory: training_cost reports it as unknown
        return trainer, trainer.fit_seconds
    if checkpoint:
        logger.warning("Comparison: continuing the interrupted training in %s", checkpoint)
        trainer.resume_checkpoint(checkpoint)
    if resumable:
        write_json_atomic(marker, {"checkpoint": trainer.saved_model_file})
    start = time.perf_counter()
    trainer.fit(train_data, valid_data, saved=True, show_progress=config["show_progress"])
    trainer.peak_memory = peak.read()
    return trainer, trainer.fit_seconds if resumable else time.perf_counter() - start


def earlier_training(marker: Path, config: Config) -> tuple[str, bool] | None:
    """The checkpoint named by ``marker`` and whether its training finished, if it was trained with
    ``config``'s settings (:data:`PRESENTATION_KEYS` aside) and either finished or holds the resume
    state of an unfinished training; None otherwise (no marker, no resume state yet, other
    settings: those are named in a warning)."""
    if not marker.is_file():
        return None
    checkpoint = json.loads(marker.read_text()).get("checkpoint")
    if not checkpoint or not Path(checkpoint).is_file():
        return None
    try:
        metadata = read_metadata(checkpoint)
    except ValueError as error:
        logger.warning("Comparison: not resuming from %s (%s); training from the start", checkpoint, error)
        return None
    finished = bool(metadata["training"].get("finished"))
    if not finished and metadata["resume"] is None:
        return None
    differing = settings_differences(metadata["config"], rebuild_config_dict(config))
    if differing:
        logger.warning("Comparison: not resuming from %s, whose settings differ in %s; training from the start",
                       checkpoint, ", ".join(differing))
        return None
    return checkpoint, finished


def settings_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The keys whose values differ between two runs' settings, leaving out :data:`PRESENTATION_KEYS`."""
    keys = (stored.keys() | current.keys()) - PRESENTATION_KEYS
    return sorted(key for key in keys if stored.get(key) != current.get(key))


def training_cost(trainer: Trainer, train_seconds: float | None) -> dict[str, float | None]:
    """What training a model cost: trainable tensor elements, seconds per training epoch (validations
    included) and the peak memory of a fit by :func:`_fit` in MiB, GPU (CUDA only) and process RSS
    (Linux only); None where unknown, e.g. for a teacher trained by the teacher stage."""
    if isinstance(trainer, SafetensorsCheckpointTrainer):
        epochs = trainer.epochs_trained()
    else:  # RecBole keys one entry per epoch by its index
        epochs = max(trainer.train_loss_dict, default=-1) + 1
    per_epoch = train_seconds / epochs if train_seconds and epochs else None
    if getattr(trainer, "epoch_seconds", None):  # the teacher stage times its epochs itself (no validation)
        per_epoch = sum(trainer.epoch_seconds) / len(trainer.epoch_seconds)
    return {
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "seconds_per_epoch": per_epoch,
        **getattr(trainer, "peak_memory", {"peak_memory_mib": None, "peak_rss_mib": None}),
    }


def _fit_teacher(config: Config, splits: list, valid_data, test_data) -> tuple[Trainer, float | None]:
    """LLMSRec's teacher trained on ``splits`` by the teacher stage (or its cached checkpoint), as a
    trainer whose ``saved_model_file`` is that checkpoint; the training time, None when reused."""
    path, outcome = train_teacher(config, splits, valid_data, test_data)
    tconfig = teacher_config(config)
    model = get_model(tconfig["model"])(tconfig, splits[0]).to(tconfig["device"])
    trainer = TeacherTrainer(tconfig, model)
    trainer.saved_model_file = str(path)
    trainer.epoch_seconds = outcome.get("epoch_seconds", [])  # empty when the cached teacher is reused
    return trainer, sum(outcome["epoch_seconds"]) if outcome["trained"] else None


def _test_results(results: dict[str, dict[str, dict]], name: str) -> dict[str, dict]:
    return {setting: {k: float(v) for k, v in metrics.items()} for setting, metrics in results[name].items()}


def run_model(
    spec: ModelSpec,
    dataset_name: str | None,
    config_files: list[str],
    seed: int,
    probe_names: list[str],
    stored: dict[str, Any] | None = None,
    store: Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate one model for one seed and run the probes; the JSON-ready result.

    ``stored``, an earlier result of the same spec and seed, is extended instead: when
    the probes it lacks are all training-time ones, the model itself is not retrained;
    otherwise it is, and every inference-time probe of ``stored`` is measured again on it.
    A plain row of LLMSRec's teacher model is that teacher (:func:`teacher_row_config`).
    With ``store`` (the results folder) each training leaves a marker there
    (:func:`running_path`), so that a rerun continues it if it is interrupted.
    """
    llm_config = teacher_row_config(spec, dataset_name, config_files, seed)
    config = llm_config or Config(
        model=spec.model, dataset=dataset_name, config_file_list=config_files,
        config_dict=model_settings(spec, dataset_name, config_files, seed),
    )
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    splits = dataset.build()
    train_data, valid_data, test_data = build_dataloaders(config, dataset, splits)
    teacher = None
    if llm_config is not None:
        teacher = _fit_teacher(config, splits, valid_data, test_data)
    elif is_llm_model(config["model"]):
        check_inputs(config, splits[0], splits[1])  # before minutes of teacher training
    if llm_config is None and uses_teacher(config["model"]):
        teacher_path, teacher_result = train_teacher(config, splits, valid_data, test_data)
        config["teacher_checkpoint"] = str(teacher_path)
    missing = [name for name in probe_names if name not in (stored or {}).get("probes", {})]
    if stored is not None and set(missing) <= set(TRAINING_PROBES):
        result = stored
    else:
        kept = {name: value for name, value in (stored or {}).get("probes", {}).items() if name in TRAINING_PROBES}
        result = {"format": RESULT_FORMAT, "label": spec.label, "model": spec.model,
                  "overrides": spec.overrides, "seed": seed, "probes": kept}
        if teacher is not None:
            result["checkpoint"] = teacher[0].saved_model_file
        if uses_teacher(config["model"]) and teacher is None:
            result["teacher"] = {"model": config["teacher_model"], "trained": teacher_result["trained"],
                                 "checkpoint": config["teacher_checkpoint"],
                                 "train_seconds": sum(teacher_result.get("epoch_seconds", [])) or None}
        # the stored row's inference-time probes are measured again on this model, so none is lost
        measured = list(dict.fromkeys([*missing, *(stored or {}).get("probes", {})]))
        marker = running_path(store, spec, seed, "train") if store else None
        evaluate_trained(result, config, dataset, splits, (train_data, valid_data, test_data), measured, teacher, marker)
    if "train_shuffle" in missing:
        window = shuffle_window(config, spec.model)
        shuffled_train = [probes.shuffle_histories(splits[0], seed, window), splits[1], splits[2]]
        if teacher is not None:
            trainer, seconds = _fit_teacher(config, shuffled_train, valid_data, test_data)
        else:
            shuffled_loader = build_dataloaders(config, dataset, shuffled_train)[0]
            marker = running_path(store, spec, seed, "train_shuffle") if store else None
            trainer, seconds = _fit(config, splits[0], shuffled_loader, valid_data, marker)
        trainer.evaluate(valid_data, load_best_model=True, show_progress=config["show_progress"])
        trained = evaluate_in_modes(config, dataset, splits, {spec.label: trainer})
        result["probes"]["train_shuffle"] = {"window": window, "train_seconds": seconds,
                                             "metrics": _test_results(trained, spec.label)}
    return result


def evaluate_trained(
    result: dict[str, Any], config: Config, dataset, splits: list, loaders: tuple, probe_names: list[str],
    teacher: tuple[Trainer, float | None] | None = None,
    marker: Path | None = None,
) -> None:
    """Train the model on ``loaders`` (train, valid, test), or take ``teacher`` (its trainer and
    training time), fill ``result`` with its test metrics and times, and run the requested
    inference-time probes on it. ``marker``: see :func:`_fit`."""
    train_data, valid_data, test_data = loaders
    if teacher is None:
        trainer, result["train_seconds"] = _fit(config, splits[0], train_data, valid_data, marker)
    else:
        trainer, result["train_seconds"] = teacher
    result["cost"] = training_cost(trainer, result["train_seconds"])
    result["curve"] = getattr(trainer, "curve", None)  # LLMSRec: losses and validation per validation round
    start = time.perf_counter()
    trainer.evaluate(test_data, load_best_model=True, show_progress=config["show_progress"])
    result["eval_seconds"] = time.perf_counter() - start
    model, label = trainer.model, result["label"]
    trainers = {label: trainer}
    if uses_teacher(config["model"]) and teacher is None:
        trainers["teacher"] = Trainer(teacher_config(config), model.teacher)
    metrics = evaluate_in_modes(config, dataset, splits, trainers)
    result["metrics"] = _test_results(metrics, label)
    if "teacher" in trainers:
        result["teacher"]["metrics"] = _test_results(metrics, "teacher")

    window = shuffle_window(config, result["model"])
    shuffled_test = probes.shuffle_histories(splits[2], config["seed"], window)
    if "shuffle" in probe_names:
        shuffled = evaluate_in_modes(config, dataset, [splits[0], splits[1], shuffled_test], {label: trainer})
        result["probes"]["shuffle"] = {"window": window, "metrics": _test_results(shuffled, label)}
    if "similarity" in probe_names:
        if probes.has_user_vectors(model):
            cosine = probes.representation_similarity(model, splits[2], shuffled_test)
            others = probes.other_user_similarity(model, splits[2], config["seed"])
            result["probes"]["similarity"] = {"mean": float(cosine.mean()), "std": float(cosine.std()), "users": len(cosine),
                                              "other_users": float(others.mean())}
        else:
            result["probes"]["similarity"] = None  # no user vector (e.g. a general recommender)
    if "breakdown" in probe_names:
        result["probes"]["breakdown"] = breakdown(config, dataset, splits, trainer)


def breakdown(config: Config, dataset, splits: list, trainer: Trainer) -> dict[str, dict[str, dict]]:
    """Test metrics per mode and group (warm/cold target items, transition/non-transition users)."""
    by_mode = {}
    for mode in COMPARISON_MODES:
        test_data = build_dataloaders(mode_config(config, mode), dataset, splits)[2]
        init_seed(config["seed"], config["reproducibility"])  # the negatives of evaluate_in_modes
        per_user = probes.per_user_metrics(trainer, test_data, config["topk"])
        groups = probes.breakdown_groups(splits[0], per_user)
        by_mode[mode] = probes.group_means(per_user, groups, [m for m in COMPARISON_METRICS if m in per_user])
    return by_mode


# ---------------------------------------------------------------------- resume store
def result_path(folder: Path, spec: ModelSpec, seed: int) -> Path:
    return folder / f"{spec.slug}-seed{seed}.json"


RUNNING_TRAININGS = ("train", "train_shuffle")  # the model, and the training-time shuffle probe's model


def running_path(folder: Path, spec: ModelSpec, seed: int, training: str) -> Path:
    """The marker of an unfinished training (one of :data:`RUNNING_TRAININGS`): its checkpoint's path."""
    return folder / f"{spec.slug}-seed{seed}.{training}.running.json"


def load_result(path: Path, spec: ModelSpec) -> dict[str, Any] | None:
    """The stored result of this spec and seed, or None if missing or written for other model settings."""
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    if stored.get("format") != RESULT_FORMAT or stored.get("model") != spec.model or stored.get("overrides") != spec.overrides:
        return None
    return stored


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".partial")
    staging.write_text(json.dumps(payload, indent=1, default=float))
    os.replace(staging, path)


# ---------------------------------------------------------------------- runner
def run_comparison(
    models: str | list[ModelSpec],
    dataset: str | None = None,
    config_files: list[str] | None = None,
    seeds: int = 1,
    probe_names: str | list[str] | None = None,
    results_dir: str | os.PathLike = "results",
    first_seed: int | None = None,
    report: bool = True,
    stored_only: bool = False,
) -> dict[str, Any]:
    """Train, evaluate and probe every model for ``seeds`` seeds; resume from finished results.

    Seeds are ``first_seed, first_seed + 1, ...`` (default: from the profile's ``seed``). Returns ``results``
    (label -> per-seed result dicts), ``folder`` and the report ``files`` written: none when ``report``
    is False, which only stores the rows (one run of a queue whose combined report a later call writes,
    instead of replacing the profile's report with this call's rows). ``stored_only`` trains and
    evaluates nothing: the report shows the stored rows, a model without any is left out, a row
    stored for fewer seeds is labelled so ("LLaRA (1 of 2 seeds)") and a stored row lacking a
    probe is shown without it (a queue's report while some of its rows are still to run).

    Raises:
        ValueError: ``seeds`` below 1; ``stored_only`` without ``report``; ``stored_only`` and
            no stored row of any model.
    """
    specs = parse_model_specs(models) if isinstance(models, str) else list(models)
    probe_names = parse_probes(probe_names) if probe_names is None or isinstance(probe_names, str) else list(probe_names)
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}.")
    if stored_only and not report:
        raise ValueError("--stored_only=True only draws the report from stored rows: drop --report=False.")
    config_files, profile = resolve_profile(dataset, config_files)
    base = Config(model=specs[0].model, dataset=dataset, config_file_list=config_files)
    folder = Path(results_dir) / base["dataset"]
    store = folder / profile
    results: dict[str, list[dict]] = {spec.label: [] for spec in specs}
    first_seed = base["seed"] if first_seed is None else first_seed
    for seed in range(first_seed, first_seed + seeds):
        for spec in specs:
            path = result_path(store, spec, seed)
            result = load_result(path, spec)
            if stored_only:
                if result is None:
                    logger.warning("Comparison: %s (seed %d) is not stored in %s: left out", spec.label, seed, store)
                else:
                    results[spec.label].append(result)
                continue
            if result is None or any(name not in result["probes"] for name in probe_names):
                logger.warning("Comparison: running %s (seed %d)", spec.label, seed)
                result = run_model(spec, base["dataset"], config_files, seed, probe_names, stored=result, store=store)
                write_json_atomic(path, result)
                for training in RUNNING_TRAININGS:
                    running_path(store, spec, seed, training).unlink(missing_ok=True)
            else:
                logger.warning("Comparison: reusing %s", path)
            results[spec.label].append(result)
    if stored_only:
        results = {label: per_seed for label, per_seed in results.items() if per_seed}
        if not results:
            raise ValueError(f"--stored_only=True: {store} holds no stored row of {', '.join(s.label for s in specs)} "
                             f"for seeds {first_seed}-{first_seed + seeds - 1}; run the comparison without it first.")
    files = write_reports(folder, profile, results, seeds) if report else []
    return {"results": results, "folder": folder, "files": files}
