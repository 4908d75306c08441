"""Assembly of a study report: figures (PNG files) and a self-contained HTML page or Markdown + PNGs.

Sections are built as a list of :class:`Section` (title, note, tables, figures); :func:`render_html` embeds every
PNG as base64 so the HTML file stands alone, :func:`render_markdown` links the PNG files next to it.
"""

from __future__ import annotations

import base64
import html
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from painvrl.analysis.report_data import (
    StudyRuns,
    baselines_against_front,
    env_metrics_table,
    environment_profile_table,
    front_parameters_table,
    front_test_metrics_table,
    mask_density_table,
    reference_baseline,
    summary_table,
)
from painvrl.study.baselines import HYPERVOLUME_COLUMN, baseline_markers

logger = logging.getLogger(__name__)

__all__ = ["TEST_NOTE", "Section", "build_sections", "render_html", "render_markdown"]

TEST_NOTE = ("Test metrics are reported for the front trials only and were never used to choose: the front, "
             "the hypervolume and every selection use validation objectives.")


@dataclass
class Section:
    """One report section: a heading, an optional note, tables and figures (PNG paths)."""

    title: str
    note: str = ""
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)
    level: int = 2
    anchor: str = ""


def _labels(study: StudyRuns) -> dict[str, str]:
    return {c: k for c, k in zip(study.objective_columns, study.objectives, strict=True)} | {
        c: c.removeprefix("params.") for c in study.param_columns}


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def _draw(label: str, figures: list[tuple[str, Path]], draw: object) -> None:
    """Run a drawing callable; a failed plot is logged and left out, never losing the tables."""
    try:
        path = draw()  # type: ignore[operator]
        figures.append((label, Path(path)))
    except Exception as exc:
        logger.warning("could not draw %s: %s", label, exc)


def _study_sections(study: StudyRuns, out: Path) -> list[Section]:
    from painvrl.analysis.plots import (
        SHAPE_NAMES,
        marker_shapes,
        plot_front,
        plot_front_hyperparameters,
        plot_grouped_bars,
        plot_hypervolume_history,
    )

    prefix = _safe(study.name)
    labels = _labels(study)
    keys, columns, directions = study.objectives, study.objective_columns, study.directions
    sections: list[Section] = [Section(f"Study {study.name}", level=2, anchor=f"study-{prefix}", note=(
        f"Experiment id {study.experiment_id}, parent run {study.parent_run_id}; objectives: "
        + ", ".join(f"{k} ({d})" for k, d in zip(keys, directions, strict=True)) + "."))]

    front = Section("Pareto front", level=3, anchor=f"front-{prefix}", note=(
        "Every finished trial on the validation objectives; grey points are dominated, the staircase is the front."))
    if len(columns) >= 2 and len(study.trials):
        _draw("Pareto front", front.figures, lambda: plot_front(
            study.trials, columns[0], columns[1], directions[:2], out / f"{prefix}_front.png", labels=labels,
            title=f"{study.name}: Pareto front ({int(study.trials['on_front'].sum())} of {len(study.trials)} trials)",
            annotate="trial_id" if study.trials["on_front"].sum() <= 12 else None,
            markers=baseline_markers(study.baselines, columns[0], columns[1]),
            reference=None if study.reference is None else
            (study.reference[0], study.reference[1][0], study.reference[1][1])))
    if study.reference is not None and len(columns) >= 2:
        front.note += (f" The cross with dotted lines is the hypervolume reference point ({study.reference[0]}): "
                       "trials beyond both lines beat it in both objectives.")
    front.tables.append(("Front trials: objectives and chosen hyperparameters", front_parameters_table(study)))
    if not study.baselines.empty:
        shapes = ", ".join(f"{method}: {SHAPE_NAMES[shape]}"
                           for method, shape in marker_shapes(list(study.baselines["method"])).items())
        front.note += (f" The labelled markers are the baselines ({', '.join(study.baselines['baseline'])}; mean "
                       f"over their seeds), one marker shape per method ({shapes}).")
        reference = reference_baseline(study)
        hypervolume = study.parent_metrics.get("hypervolume")
        if reference is not None:
            front.note += (f" The study's hypervolume takes the best baseline, {reference}, as its reference point"
                           + (f" ({hypervolume:.4g})." if hypervolume is not None else "."))
        front.note += f" '{HYPERVOLUME_COLUMN}' is the front's hypervolume with that baseline as reference point."
        front.tables.append(("Baselines against the front (validation; test reported, never used to choose)",
                             baselines_against_front(study)))
    sections.append(front)

    hv = Section("Hypervolume vs trials", level=3, anchor=f"hv-{prefix}", note=(
        "Hypervolume of the validation objectives dominated by the first t finished trials."))
    if study.hypervolume_history.size:
        _draw("Hypervolume history", hv.figures, lambda: plot_hypervolume_history(
            {study.name: study.hypervolume_history}, out / f"{prefix}_hypervolume.png",
            title=f"{study.name}: hypervolume vs finished trials"))
    else:
        hv.note += " No hypervolume history is logged for this study."
    sections.append(hv)

    params = [c for c in study.param_columns if study.front[c].nunique(dropna=True) > 0]
    hp = Section("Hyperparameters along the front", level=3, anchor=f"hp-{prefix}", note=(
        f"Sampled hyperparameters of the front trials against {keys[0]}."))
    if params and len(study.front):
        _draw("Hyperparameters along the front", hp.figures, lambda: plot_front_hyperparameters(
            study.front, columns[0], directions[0], params, out / f"{prefix}_hyperparameters.png", labels=labels,
            title=f"{study.name}: hyperparameters along the front"))
    sections.append(hp)

    envs = env_metrics_table(study, "val")
    env = Section("Per-environment metrics of the front trials", level=3, anchor=f"env-{prefix}", note=(
        "Validation metrics per environment (split/label) from each front trial's metrics.json."))
    if not envs.empty:
        main_metric = keys[0].rsplit(".", 1)[-1]
        shown = envs[envs["metric"] == main_metric] if (envs["metric"] == main_metric).any() else \
            envs[envs["metric"] == envs["metric"].iloc[0]]
        metric = str(shown["metric"].iloc[0])
        _draw("Per-environment metrics", env.figures, lambda: plot_grouped_bars(
            shown, "trial_id", "environment", "value", out / f"{prefix}_environments.png",
            ylabel=f"validation {metric} (fraction, higher is better)", xlabel="front trial",
            title=f"{study.name}: validation {metric} per environment"))
        env.tables.append(("Per-environment validation metrics (front trials)",
                           envs.pivot_table(index=["trial_id", "environment"], columns="metric",
                                            values="value").reset_index()))
    else:
        env.note += " No per-environment metrics were logged."
    profile = environment_profile_table(study)
    if not profile.empty:
        env.tables.append(("What the environments are (training positives per learned environment: size, mean "
                           "item popularity, mean time rank, distance of each modality's mean from the overall "
                           "mean)", profile))
    sections.append(env)

    masks = mask_density_table(study)
    mask = Section("Mask density per modality", level=3, anchor=f"mask-{prefix}", note=(
        "Fraction of open feature gates per modality ('all': whole feature vector) for each front trial."))
    if not masks.empty:
        _draw("Mask density per modality", mask.figures, lambda: plot_grouped_bars(
            masks, "trial_id", "modality", "density", out / f"{prefix}_mask_density.png",
            ylabel="mask density (fraction of open gates, 0-1)", xlabel="front trial",
            title=f"{study.name}: mask density per modality"))
        mask.tables.append(("Mask density (front trials)",
                            masks.pivot_table(index="trial_id", columns="modality", values="density").reset_index()))
    else:
        mask.note += " No mask was logged (e.g. an erm study)."
    sections.append(mask)

    sections.append(Section("Test metrics of the front trials (reported, never used to choose)", level=3,
                            anchor=f"test-{prefix}", note=TEST_NOTE,
                            tables=[("Test metrics of the front trials: not used for selection",
                                     front_test_metrics_table(study))]))
    if study.optuna_states is not None:
        states = pd.DataFrame(sorted(study.optuna_states.items()), columns=["Optuna state", "trials"])
        sections.append(Section("Optuna storage", level=3, anchor=f"optuna-{prefix}",
                                note="Trial states in the study's Optuna storage.", tables=[("Trial states", states)]))
    return sections


def build_sections(studies: list[StudyRuns], out: Path) -> list[Section]:
    """All report sections for ``studies`` (first one primary), writing figures into ``out``."""
    from painvrl.analysis.plots import plot_fronts_overlay, plot_hypervolume_history

    out.mkdir(parents=True, exist_ok=True)
    summary = Section("Summary", anchor="summary", note="One row per study; best values are over all trials "
                      "(validation objectives).", tables=[("Studies", summary_table(studies))])
    sections = [summary]
    if len(studies) > 1:
        compare = Section("Comparison", anchor="comparison", note=(
            "Studies side by side (methods, samplers, datasets) on the first study's objectives."))
        first = studies[0]
        shared = [s for s in studies if s.objectives[:2] == first.objectives[:2]
                  and s.directions[:2] == first.directions[:2]]
        if len(first.objectives) >= 2 and len(shared) > 1:
            tables = {s.name: s.trials for s in shared}
            _draw("Fronts compared", compare.figures, lambda: plot_fronts_overlay(
                tables, first.objective_columns[0], first.objective_columns[1], first.directions[:2],
                out / "compare_fronts.png", labels=_labels(first)))
        skipped = [s.name for s in studies if s not in shared]
        if skipped:
            compare.note += f" Not on the shared front plot (other objectives): {', '.join(skipped)}."
        histories = {s.name: s.hypervolume_history for s in studies if s.hypervolume_history.size}
        if histories:
            _draw("Hypervolume compared", compare.figures, lambda: plot_hypervolume_history(
                histories, out / "compare_hypervolume.png",
                title="Hypervolume vs finished trials (each study's own reference point)"))
        sections.append(compare)
    for study in studies:
        sections.extend(_study_sections(study, out))
    return sections


def _table_html(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p><em>(no rows)</em></p>"
    table = frame.to_html(index=False, border=0, classes="data", float_format=lambda v: f"{v:.4g}", na_rep="",
                          escape=True)
    return f"<div class='table-wrap'>{table}</div>"


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table.data{border-collapse:collapse;font-size:0.85em;margin:0.5em 0 1.5em}
table.data th,table.data td{border-bottom:1px solid #ccc;padding:3px 8px;text-align:right}
table.data th{background:#f2f2f2}
figure{margin:1em 0}figure img{max-width:100%}figcaption{font-size:0.85em;color:#555}
.table-wrap{overflow-x:auto}.note{color:#444}
.test-note{background:#fff4e0;border-left:4px solid #E69F00;padding:0.5em 1em}
"""


def render_html(sections: list[Section], title: str) -> str:
    """A self-contained HTML page: tables inline, figures as base64 PNG data URIs."""
    parts = [f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>", "<nav><ul>"]
    parts += [f"<li><a href='#{s.anchor}'>{html.escape(s.title)}</a></li>" for s in sections if s.level == 2]
    parts.append("</ul></nav>")
    for section in sections:
        level = section.level
        parts.append(f"<section id='{html.escape(section.anchor)}'><h{level}>{html.escape(section.title)}</h{level}>")
        if section.note:
            css = "test-note" if section.note == TEST_NOTE else "note"
            parts.append(f"<p class='{css}'>{html.escape(section.note)}</p>")
        for caption, path in section.figures:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        for caption, frame in section.tables:
            parts.append(f"<h{level + 1}>{html.escape(caption)}</h{level + 1}>{_table_html(frame)}")
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def render_markdown(sections: list[Section], title: str, out: Path) -> str:
    """Markdown text linking the PNG files (relative to ``out``, where the .md file is written)."""
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"{'#' * section.level} {section.title}", ""]
        if section.note:
            lines += [f"> {section.note}" if section.note == TEST_NOTE else section.note, ""]
        for caption, path in section.figures:
            lines += [f"![{caption}]({path.relative_to(out).as_posix()})", ""]
        for caption, frame in section.tables:
            lines += [f"**{caption}**", "", _table_markdown(frame), ""]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _table_markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "*(no rows)*"
    header = "| " + " | ".join(_cell(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])
