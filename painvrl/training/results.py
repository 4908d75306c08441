"""Pieces of metrics.json that are not metrics: provenance, mask summary (with ROC-AUC), JSON writing."""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from painvrl.config import Config
from painvrl.data.dataset import InteractionData

VERSIONED_PACKAGES = ("torch", "numpy", "ray", "optuna", "mlflow", "pandas", "painvrl")


def package_versions() -> dict[str, str]:
    """Versions of python and the key packages (installed distributions only; nothing is imported)."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str:
    """Commit of the repository holding the painvrl package ("+dirty" when it has local changes), or
    "unknown" (installed from a wheel, git missing)."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else (commit or "unknown")


def provenance(config: Config, data: InteractionData) -> dict[str, Any]:
    return {
        "seed": {"train": config.train.seed, "dataset": config.dataset.seed},
        "config_hash": config.config_hash(),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "dataset": data.summary(),
    }


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Rank-based ROC-AUC (Mann-Whitney U; ties get average ranks). None when a class is empty."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average rank (1-based) of each run of tied scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def mask_summary(mask: np.ndarray | None, slices: dict[str, slice], invariant_dims: np.ndarray | None,
                 learned: bool, logits: np.ndarray | None = None) -> dict[str, Any]:
    """density (mean mask value), per-modality density, fraction_open (share of dims with m > 0), and the
    ROC-AUC of mask values against the true invariant dims when ground truth exists (``auc``; dims clamped to
    the same value count as ties) and of the gate logits (``auc_logits``, learned masks: the same ranking with
    the clamp's ties broken), plus what the final model can read: ``invariant_open`` / ``spurious_open`` (share
    of true invariant / spurious dims with m > 0) and ``invariant_mass`` (share of the total gate value on
    invariant dims). No mask = all dims used."""
    dim = max((s.stop for s in slices.values()), default=0)
    values = np.ones(dim, dtype=np.float64) if mask is None else np.asarray(mask, dtype=np.float64)
    summary: dict[str, Any] = {
        "learned": learned,
        "density": float(values.mean()) if values.size else 0.0,
        "per_modality": {m: float(values[s].mean()) for m, s in slices.items()},
        "fraction_open": float((values > 0).mean()) if values.size else 0.0,
    }
    if mask is not None and invariant_dims is not None:
        summary["auc"] = roc_auc(values, invariant_dims)
        if logits is not None:
            summary["auc_logits"] = roc_auc(np.asarray(logits, dtype=np.float64), invariant_dims)
        invariant = np.asarray(invariant_dims, dtype=bool)
        if invariant.any() and (~invariant).any():
            # AUC counts a closed invariant dim tied with closed spurious ones as half wrong; with redundant
            # invariant columns a sparse mask closes some of them at no cost, so report the open sets too.
            summary["invariant_open"] = float((values[invariant] > 0).mean())
            summary["spurious_open"] = float((values[~invariant] > 0).mean())
            total = float(values.sum())
            summary["invariant_mass"] = float(values[invariant].sum()) / total if total > 0 else None
    return summary


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(value: Any) -> Any:
    """NaN / inf are not JSON: written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_metrics(metrics: dict[str, Any], path: Path) -> None:
    Path(path).write_text(json.dumps(_finite(json.loads(json.dumps(metrics, default=_json_default))), indent=2))


LEARNED_ENVIRONMENTS = ("learned", "eiil")
"""``environments.source`` values of metrics.json for environments a run found itself (HEI or EIIL)."""


def flatten_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json -> {"val.iid.recall@20": ..., "test.ood.ndcg@10": ...} (plus per-env worst/spread, the mask's
    density and AUC, the learned environments' ARI and sizes, and the gradient start's alignment and use)."""
    flat: dict[str, float] = {}
    for section in ("val", "test"):
        for split, block in (metrics.get(section) or {}).items():
            if split == "envs" or not isinstance(block, dict):
                continue
            values = block.get("metrics", block)
            for name, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and "@" in name:
                    flat[f"{section}.{split}.{name}"] = float(value)
    mask = metrics.get("mask") or {}
    if isinstance(mask.get("density"), int | float):
        flat["mask.density"] = float(mask["density"])
    if isinstance(mask.get("auc"), int | float):
        flat["mask.auc"] = float(mask["auc"])
    envs = metrics.get("environments") or {}
    if isinstance(envs.get("ari"), int | float):
        flat["environments.ari"] = float(envs["ari"])
    if envs.get("source") in LEARNED_ENVIRONMENTS:
        for env, size in enumerate(envs.get("sizes") or []):
            flat[f"environments.size.{env}"] = float(size)
    flat.update(_gradient_start(metrics.get("mask_history") or metrics.get("environment_history") or []))
    return flat


def _gradient_start(history: list[dict[str, Any]]) -> dict[str, float]:
    """The first round's gradient start, where HEI had one: its difficulty alignment, whether it was used (0
    where it fell back to random labels), the EM iterate returned and its difficulty alignment."""
    for record in history:
        choice = record.get("init_choice") if record.get("phase") == "hei" else None
        if isinstance(choice, dict) and isinstance(choice.get("difficulty_alignment"), int | float):
            out = {"environments.difficulty_alignment": float(choice["difficulty_alignment"]),
                   "environments.gradient_start_used": float(record.get("init") == "gradient")}
            if isinstance(record.get("kept_iteration"), int):
                out["environments.kept_iteration"] = float(record["kept_iteration"])
            if isinstance(record.get("kept_alignment"), int | float):
                out["environments.kept_alignment"] = float(record["kept_alignment"])
            return out
    return {}


def final_report(metrics: dict[str, Any], mask: Any | None) -> dict[str, Any]:
    """The last report of a trial: flat metrics, plus metrics.json and the mask as JSON strings."""
    report: dict[str, Any] = {**flatten_metrics(metrics), "final": True,
                              "metrics_json": json.dumps(metrics, default=float)}
    if mask is not None:
        report["mask_json"] = json.dumps([round(float(x), 6) for x in mask])
    return report
