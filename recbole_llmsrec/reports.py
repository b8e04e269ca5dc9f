"""Reports of a comparison: markdown tables, bar charts and learning curves from stored results.

:mod:`recbole_llmsrec.compare` runs the models and stores one JSON result per model and
seed; this module only reads those results and draws them:

- ``<profile>.md`` / ``.png``: the comparison table and chart (test metrics, times);
- ``<profile>.<probe>.md`` / ``.png``: one table and chart per probe;
- ``<profile>.curves.png``: validation metric against optimizer steps for every model that
  records a learning curve (LLMSRec and the LoRA baselines), with its teacher and Pop as
  horizontal lines, and one panel per loss term and one for the teacher cosine below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recbole_llmsrec.quick_start import COMPARISON_METRICS, COMPARISON_MODES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BREAKDOWN_GROUPS = ("warm", "cold", "transition", "non-transition")
BREAKDOWN_METRICS = ("ndcg@10", "hit@10")
METRIC_NAMES = {"ndcg": "NDCG", "hit": "Hit"}


# ---------------------------------------------------------------------- tables
@dataclass(frozen=True)
class Column:
    """A table column: its header and how to format a value (``metric``, ``seconds``, ``percent``)."""

    name: str
    kind: str = "metric"


FORMATS = {"metric": "{:.4f}", "seconds": "{:.1f}", "percent": "{:+.1f}", "count": "{:.0f}"}
Cell = tuple[float, float | None]  # mean, std over seeds (None for a single seed)
MISSING = "—"


def summarize(values: list[float | None]) -> Cell | None:
    """Mean and sample std over seeds (std None for one seed); None without any value."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def format_cell(cell: Cell | None, kind: str) -> str:
    if cell is None:
        return MISSING
    mean, std = cell
    text = FORMATS[kind].format(mean)
    return text if std is None else f"{text} ± {FORMATS[kind].format(std).lstrip('+')}"


def format_table(columns: list[Column], rows: dict[str, dict[str, Cell | None]]) -> str:
    """A markdown table: one row per label, one column per :class:`Column`."""
    lines = ["| model | " + " | ".join(c.name for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, cells in rows.items():
        lines.append(f"| {label} | " + " | ".join(format_cell(cells.get(c.name), c.kind) for c in columns) + " |")
    return "\n".join(lines)


def parse_table(text: str) -> tuple[list[str], dict[str, dict[str, Cell | None]]]:
    """Column names and rows of the first markdown table in ``text`` (inverse of :func:`format_table`)."""
    table = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    if len(table) < 2:
        raise ValueError("No markdown table found.")
    split = lambda line: [cell.strip() for cell in line.strip("|").split("|")]  # noqa: E731
    columns = split(table[0])[1:]
    rows: dict[str, dict[str, Cell | None]] = {}
    for line in table[2:]:
        label, *cells = split(line)
        if len(cells) != len(columns):
            raise ValueError(f"Row {label!r} has {len(cells)} cells for {len(columns)} columns.")
        rows[label] = {}
        for name, cell in zip(columns, cells):
            if cell == MISSING:
                rows[label][name] = None
                continue
            mean, _, std = cell.partition("±")
            rows[label][name] = (float(mean), float(std) if std.strip() else None)
    return columns, rows


def write_table(path: Path, title: str, notes: str, columns: list[Column], rows: dict[str, dict[str, Cell | None]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}\n\n{notes.strip()}\n\n{format_table(columns, rows)}\n")


def bar_figure(title: str, xlabel: str, columns: list[str], rows: dict[str, dict[str, Cell | None]]) -> Figure:
    """Grouped horizontal bars: one group per row label, top to bottom in the table's order, one bar
    per column, seed std as error bars. Horizontal so that long labels (``LLMSRec[key=value,...]``)
    stay readable however many rows a comparison holds."""
    plt = _pyplot()
    labels = list(rows)
    height = 0.8 / max(len(columns), 1)
    label_inches = 0.075 * max((len(label) for label in labels), default=0)  # the tick labels get their own width
    fig, ax = plt.subplots(figsize=(7.5 + label_inches, 1.5 + 0.16 * len(labels) * max(len(columns), 2)),
                           layout="constrained")
    for index, column in enumerate(columns):
        cells = [rows[label].get(column) for label in labels]
        means = [cell[0] if cell else np.nan for cell in cells]
        errors = [cell[1] or 0.0 if cell else 0.0 for cell in cells]
        positions = np.arange(len(labels)) + (index - (len(columns) - 1) / 2) * height
        ax.barh(positions, means, height, xerr=errors if any(errors) else None, label=column, capsize=2)
    ax.set_yticks(np.arange(len(labels)), labels, fontsize="small")
    ax.invert_yaxis()  # the first row on top, as in the table
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.axvline(0, color="black", linewidth=0.5)
    fig.legend(loc="outside right upper", fontsize="small")
    return fig


def bar_chart(path: Path, title: str, xlabel: str, columns: list[str], rows: dict[str, dict[str, Cell | None]]) -> None:
    """Save :func:`bar_figure` to ``path``."""
    fig = bar_figure(title, xlabel, columns, rows)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def metric_columns(prefix: str = "", kind: str = "metric", modes=COMPARISON_MODES) -> list[Column]:
    """``NDCG@10 full`` ... ``Hit@20 uni100`` columns (metric names as RecBole prints them)."""
    return [Column(f"{prefix}{metric_title(m)} {mode}", kind) for mode in modes for m in COMPARISON_METRICS]


def metric_title(metric: str) -> str:
    name, _, k = metric.partition("@")
    return f"{METRIC_NAMES.get(name, name)}@{k}"


def relative_change(new: float, old: float) -> float | None:
    return None if old == 0 else 100.0 * (new - old) / old


# ---------------------------------------------------------------------- reports
def _rows(results: dict[str, list[dict]], cell_values, seeds: int) -> dict[str, dict[str, Cell | None]]:
    """Rows of a table: ``cell_values(result) -> {column: value}`` per seed, summarized over seeds.

    A row filled by fewer than the comparison's ``seeds`` (e.g. a probe run on one seed so
    far) says so in its label, ``"BERT4Rec (1 of 2 seeds)"``, since the table's note names them all.
    """
    rows = {}
    for label, per_seed in results.items():
        values = [cell_values(result) for result in per_seed]
        values = [v for v in values if v is not None]
        if values:
            names = dict.fromkeys(name for v in values for name in v)
            shown = label if len(values) >= seeds else f"{label} ({len(values)} of {seeds} seeds)"
            rows[shown] = {name: summarize([v.get(name) for v in values]) for name in names}
    return rows


def _test_cells(metrics: dict[str, dict], prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}{metric_title(m)} {mode}": metrics[f"test {mode}"][m]
        for mode in COMPARISON_MODES for m in COMPARISON_METRICS if m in metrics.get(f"test {mode}", {})
    }


def write_reports(
    folder: Path, profile: str, results: dict[str, list[dict]], seeds: int, valid_metric: str = "ndcg@10"
) -> list[Path]:
    """Write the comparison and probe tables, charts and learning curves from per-seed results; return the paths."""
    seed_note = f"Mean over {seeds} seeds ± sample std." if seeds > 1 else "One seed."
    written = []
    columns = metric_columns() + [Column("train s", "seconds"), Column("eval s", "seconds"),
                                  Column("trainable params", "count"), Column("s / epoch", "seconds"),
                                  Column("peak GPU MiB", "count"), Column("peak RSS MiB", "count")]

    def comparison_cells(result):
        cost = result.get("cost") or {}
        return {**_test_cells(result["metrics"]), "train s": result["train_seconds"], "eval s": result["eval_seconds"],
                "trainable params": cost.get("trainable_parameters"), "s / epoch": cost.get("seconds_per_epoch"),
                "peak GPU MiB": cost.get("peak_memory_mib"), "peak RSS MiB": cost.get("peak_rss_mib")}

    rows = _rows(results, comparison_cells, seeds)
    teachers = {label: per_seed for label, per_seed in results.items() if "teacher" in per_seed[0]}
    checkpoints = {r.get("checkpoint") for per_seed in results.values() for r in per_seed} - {None}
    if teachers and next(iter(teachers.values()))[0]["teacher"].get("checkpoint") not in checkpoints:
        first_label = next(iter(teachers))
        teacher_label = f"{teachers[first_label][0]['teacher']['model']} (teacher of {first_label})"
        rows.update(_rows({teacher_label: teachers[first_label]}, lambda r: {
            **_test_cells(r["teacher"]["metrics"]), "train s": r["teacher"]["train_seconds"]}, seeds))
    notes = (f"Test set; full = ranking all items, uni100 = target among 99 sampled negatives (same for every model). "
             f"{seed_note} train s = wall time of fitting (per-epoch validation included); eval s = one test pass "
             "in full ranking (LLMSRec: item vectors already cached by the last validation); trainable params = "
             "tensor elements the optimizer updates (LLM models: heads, output tokens, LoRA adapters; the frozen "
             "LLM and teacher excluded); s / epoch = train s per training epoch; peak GPU MiB (CUDA only) and peak "
             "RSS MiB (the process's resident memory, Linux only; LLM loading included, and never below what the "
             "rows before it left allocated) during the fit, none for a teacher trained earlier. Same filtering, "
             "split, seed and metrics for every row; a plain row of LLMSRec's teacher model (e.g. SASRec) is that "
             "teacher itself (same checkpoint), else a teacher row is added.")
    path = folder / f"{profile}.md"
    write_table(path, f"Comparison: {folder.name}, profile {profile}", notes, columns, rows)
    bar_chart(path.with_suffix(".png"), f"{folder.name} / {profile}", "test score",
              ["NDCG@10 full", "NDCG@10 uni100", "Hit@10 full", "Hit@10 uni100"], rows)
    written += [path, path.with_suffix(".png")]

    for probe in ("shuffle", "train_shuffle"):
        def change_cells(result, probe=probe):
            stored = result["probes"].get(probe)
            if stored is None:
                return None
            cells = _test_cells(stored["metrics"])
            base = _test_cells(result["metrics"])
            cells.update({f"Δ% {name}": relative_change(cells[name], base[name]) for name in cells})
            return cells

        rows = _rows(results, change_cells, seeds)
        if not rows:
            continue
        what = ("evaluated with each user's test history randomly permuted (seeded; LLMSRec: its "
                "history_length latest items, titles, [HistoryEmb] vectors and dates moved together)"
                if probe == "shuffle" else
                "trained on randomly permuted training histories, evaluated on the original test histories "
                "(LLMSRec keeps its teacher trained on the original order)")
        notes = f"Test scores of models {what}; Δ% = relative change against the same model in the comparison. {seed_note}"
        columns = metric_columns() + metric_columns("Δ% ", "percent")
        path = folder / f"{profile}.{probe}.md"
        write_table(path, f"{probe.replace('_', '-')} probe: {folder.name}, profile {profile}", notes, columns, rows)
        bar_chart(path.with_suffix(".png"), f"{probe}: relative change (%)", "Δ% vs original",
                  ["Δ% NDCG@10 full", "Δ% NDCG@10 uni100", "Δ% Hit@10 full", "Δ% Hit@10 uni100"], rows)
        written += [path, path.with_suffix(".png")]

    rows = _rows(results, lambda r: None if not r["probes"].get("similarity") else {
        "cosine": r["probes"]["similarity"]["mean"], "std over users": r["probes"]["similarity"]["std"],
        "other users": r["probes"]["similarity"].get("other_users")}, seeds)  # absent from results stored before it existed
    if rows:
        path = folder / f"{profile}.similarity.md"
        notes = ("Mean cosine similarity between each test user's vector from the original and from the shuffled "
                 "history (the inference-shuffle permutation), and its std over users; other users = mean cosine "
                 "between different test users' vectors (each against another in a seeded cycle), the level at which "
                 f"a vector no longer tells its user apart: an unchanged vector means little when this is as high. {seed_note}")
        write_table(path, f"Representation similarity: {folder.name}, profile {profile}", notes,
                    [Column("cosine"), Column("std over users"), Column("other users")], rows)
        bar_chart(path.with_suffix(".png"), "cosine(original, shuffled) user vector", "mean cosine", ["cosine"], rows)
        written += [path, path.with_suffix(".png")]

    def breakdown_cells(result):
        stored = result["probes"].get("breakdown")
        if stored is None:
            return None
        return {f"{metric_title(m)} {mode} {group}": stored[mode][group][m]
                for mode in COMPARISON_MODES for group in BREAKDOWN_GROUPS for m in BREAKDOWN_METRICS}

    rows = _rows(results, breakdown_cells, seeds)
    if rows:
        first = next(r for per_seed in results.values() for r in per_seed if r["probes"].get("breakdown"))
        sizes = ", ".join(f"{g}: {first['probes']['breakdown']['full'][g]['users']}" for g in BREAKDOWN_GROUPS)
        notes = ("Test scores per group: warm/cold = users whose target item is in the top/bottom 35% of items "
                 "by training popularity; transition/non-transition = top/bottom half of users by the share of "
                 "their consecutive training pairs that another user's training sequence also holds. "
                 f"Users per group: {sizes}. {seed_note}")
        columns = [Column(f"{metric_title(m)} {mode} {group}") for mode in COMPARISON_MODES
                   for group in BREAKDOWN_GROUPS for m in BREAKDOWN_METRICS]
        path = folder / f"{profile}.breakdown.md"
        write_table(path, f"Breakdowns: {folder.name}, profile {profile}", notes, columns, rows)
        bar_chart(path.with_suffix(".png"), "NDCG@10 (uni100) per group", "test NDCG@10",
                  [f"NDCG@10 uni100 {group}" for group in BREAKDOWN_GROUPS], rows)
        written += [path, path.with_suffix(".png")]
    path = folder / f"{profile}.curves.png"
    if curve_chart(path, f"Learning curves: {folder.name}, profile {profile}", results, valid_metric):
        written.append(path)
    return written


# ---------------------------------------------------------------------- learning curves
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


LOSS_TERMS = ("retrieval", "distillation", "uniformity")
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D")


def curve_figure(title: str, results: dict[str, list[dict]], valid_metric: str) -> Figure | None:
    """The learning-curve figure of every result with a ``curve``, or None when none has one.

    Top: the validation metric against optimizer steps (one line per seed, one colour per model),
    each teacher's and Pop's validation score as horizontal lines. Below, one panel per loss term
    that any curve records and one for cos(u, teacher), in the models' colours, so that the one
    legend, beside the top panel, names every line however many models a comparison holds.
    """
    curved = {label: [r for r in per_seed if r.get("curve")] for label, per_seed in results.items()}
    curved = {label: per_seed for label, per_seed in curved.items() if per_seed}
    if not curved:
        return None
    points = [point for per_seed in curved.values() for result in per_seed for point in result["curve"]]
    terms = [term for term in LOSS_TERMS if any(point["losses"].get(term) is not None for point in points)]
    with_cosine = any(point.get("distill_cosine") is not None for point in points)
    plt = _pyplot()
    lower = len(terms) + with_cosine
    legend_inches = 0.07 * max(len(label) for label in curved) + 1  # the legend gets its own width
    fig, axes = plt.subplots(1 + lower, 1, figsize=(6.5 + legend_inches, 4.5 + 1.7 * lower), sharex=True,
                             squeeze=False, height_ratios=[3] + [1.4] * lower, layout="constrained")
    top, *panels = axes[:, 0]
    loss_axes = dict(zip(terms, panels))
    cosine = panels[-1] if with_cosine else None
    first_point = points[0]
    setting = f"valid {first_point.get('mode', 'full')}"
    valid_metric = first_point.get("metric", valid_metric)  # the metric the trainer selected on
    references = {}
    for label, per_seed in curved.items():
        for result in per_seed:
            teacher = result.get("teacher", {}).get("metrics", {}).get(setting, {})
            if valid_metric in teacher:
                references.setdefault(f"{result['teacher']['model']} (teacher)", []).append(teacher[valid_metric])
    for label, per_seed in results.items():
        if per_seed and per_seed[0].get("model") == "Pop":
            references["Pop"] = [r["metrics"][setting][valid_metric] for r in per_seed
                                 if valid_metric in r.get("metrics", {}).get(setting, {})]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, per_seed) in enumerate(curved.items()):
        # past the colour cycle (10 colours) the next models take the colours again with another
        # line style and marker, so that every model keeps a style of its own in the one legend
        group = index // len(colors)
        style = {"color": colors[index % len(colors)], "linestyle": LINE_STYLES[group % len(LINE_STYLES)],
                 "marker": MARKERS[group % len(MARKERS)]}
        for seed_index, result in enumerate(per_seed):
            steps = [point["step"] for point in result["curve"]]
            top.plot(steps, [point["valid"][valid_metric] for point in result["curve"]], markersize=3,
                     label=label if seed_index == 0 else None, **style)
            lower_curves = {axis: [point["losses"].get(term) for point in result["curve"]]
                            for term, axis in loss_axes.items()}
            if cosine is not None:
                lower_curves[cosine] = [point.get("distill_cosine") for point in result["curve"]]
            for axis, values in lower_curves.items():
                if any(value is not None for value in values):  # a LoRA row records neither distillation nor cosine
                    axis.plot(steps, values, markersize=2, **style)
    for index, (name, values) in enumerate(references.items()):
        if values:
            top.axhline(float(np.mean(values)), color="black", linestyle=("--", ":")[index % 2], linewidth=1,
                        label=f"{name}: {np.mean(values):.4f}")
    top.set_ylabel(f"{metric_title(valid_metric)} ({setting})")
    top.set_title(title)
    fig.legend(loc="outside right upper", fontsize="small")
    for term, axis in loss_axes.items():
        axis.set_ylabel(f"{term} loss\n(mean per batch)")
    for term in ("retrieval", "distillation"):  # non-negative, and spanning orders of magnitude across runs
        if term in loss_axes:
            loss_axes[term].set_yscale("log")
    if cosine is not None:
        cosine.set_ylabel("cos(u, teacher)")
    axes[-1, 0].set_xlabel("optimizer steps")
    return fig


def curve_chart(path: Path, title: str, results: dict[str, list[dict]], valid_metric: str) -> bool:
    """Save :func:`curve_figure` to ``path``; returns whether anything was drawn."""
    fig = curve_figure(title, results, valid_metric)
    if fig is None:
        return False
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return True
