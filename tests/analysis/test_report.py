"""Study report over a real MLflow sqlite store (and Optuna storage) laid out by painvrl.study.tracking."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_store import MODALITIES, fresh_tracking_uri, make_study

from painvrl.analysis.report import REPORT_ARTIFACT_PATH
from painvrl.analysis.report_data import (
    env_metrics_table,
    environment_profile_table,
    front_test_metrics_table,
    load_study_runs,
    mask_density_table,
    summary_table,
)
from painvrl.cli import main
from painvrl.errors import PainvrlInputError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, dict[str, object]]:
    """Two studies (different sampler, method and dataset) in one MLflow store, each with its Optuna storage."""
    root = tmp_path_factory.mktemp("studies")
    uri = fresh_tracking_uri(root)
    outcomes = {"alpha": make_study(root, uri, "alpha", sampler="tpe", method="painvrl", seed=0),
                "beta": make_study(root, uri, "beta", sampler="random", method="invrl", seed=1,
                                   dataset="movielens")}
    return uri, root, outcomes  # type: ignore[return-value]


def _artifacts(uri: str, run_id: str, path: str | None = None) -> list[str]:
    from mlflow.tracking import MlflowClient

    return [a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(run_id, path)]


def test_load_study_runs_matches_the_driver(store: tuple[str, Path, dict]) -> None:
    uri, _, outcomes = store
    study = load_study_runs(uri, "alpha")
    outcome = outcomes["alpha"]
    assert study.parent_run_id == outcome.parent_run_id
    assert study.objectives == ["val.iid.recall@20", "val.ood.recall@20"]
    assert study.directions == ["maximize", "maximize"]
    assert len(study.trials) == 9 and (study.trials["status"] == "FINISHED").sum() == 8
    assert set(study.param_columns) == {"params.mask.pref_ood", "params.environments.n_envs",
                                        "params.mask.sparsity_weight"}
    assert pd.api.types.is_numeric_dtype(study.trials["params.mask.pref_ood"])
    # The front read from MLflow is the driver's front (computed from the Optuna storage).
    ours = sorted(map(tuple, np.round(study.front[study.objective_columns].to_numpy(), 12)))
    theirs = sorted(map(tuple, np.round(outcome.front[["val.iid.recall@20", "val.ood.recall@20"]].to_numpy(), 12)))
    assert ours == theirs
    assert study.hypervolume_history.shape == (8,)
    assert study.hypervolume_history[-1] == pytest.approx(outcome.hypervolume)
    assert study.parent_metrics["front_size"] == len(outcome.front)
    assert study.optuna_states == {"COMPLETE": 8, "FAIL": 1}
    assert set(study.metrics_json) == set(study.front["trial_id"])
    assert study.spec["name"] == "alpha"


def test_tables_of_front_trials(store: tuple[str, Path, dict]) -> None:
    uri, _, _ = store
    study = load_study_runs(uri, "alpha")
    front_ids = set(study.front["trial_id"])

    envs = env_metrics_table(study)
    assert set(envs["trial_id"]) == front_ids
    counts = envs[envs["metric"] == "recall@20"].groupby("trial_id")["environment"].nunique()
    n_envs = study.front.set_index("trial_id")["params.environments.n_envs"]
    assert (counts.sort_index() == n_envs.loc[counts.index].sort_index()).all()

    profile = environment_profile_table(study)
    assert set(profile["trial_id"]) == front_ids
    assert (profile.groupby("trial_id")["env"].count().sort_index()
            == n_envs.loc[sorted(front_ids)].to_numpy()).all()
    assert {f"shift {m}" for m in MODALITIES} <= set(profile.columns)
    assert (profile["violation z"] == 38.0).all() and (profile["n_envs"] == profile.groupby("trial_id")["env"]
                                                          .transform("count")).all()

    masks = mask_density_table(study)
    assert set(masks["modality"]) == {*MODALITIES, "all"}
    assert masks["density"].between(0, 1).all()

    tests = front_test_metrics_table(study)
    assert list(tests["trial_id"]) == list(study.front["trial_id"])
    assert "test.iid.recall@20" in tests.columns and "test.ood.recall@20" in tests.columns
    assert not any(c.startswith("val.") for c in tests.columns)
    expected = study.front["metrics.test.iid.recall_at_20"].to_numpy()
    np.testing.assert_allclose(tests["test.iid.recall@20"].to_numpy(), expected)

    summary = summary_table([study, load_study_runs(uri, "beta")])
    assert list(summary["study"]) == ["alpha", "beta"]
    assert list(summary["sampler"]) == ["tpe", "random"]
    assert list(summary["method"]) == ["painvrl", "invrl"]
    assert list(summary["dataset"]) == ["synthetic", "movielens"]
    assert list(summary["front size"]) == [len(study.front), int(summary["front size"].iloc[1])]


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(data, validate=True)
            for data in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)]


def test_html_report_compares_studies_and_is_logged(store: tuple[str, Path, dict], tmp_path: Path) -> None:
    uri, _, outcomes = store
    out = tmp_path / "report"
    assert main(["report", "--experiment", "alpha", "--compare", "beta", "--tracking-uri", uri,
                 "--output", str(out)]) == 0
    html = (out / "report.html").read_text()
    for heading in ("Summary", "Comparison", "Study alpha", "Study beta", "Pareto front", "Hypervolume vs trials",
                    "Hyperparameters along the front", "Per-environment metrics of the front trials",
                    "Mask density per modality", "Test metrics of the front trials (reported, never used to choose)",
                    "Optuna storage"):
        assert f">{heading}</h" in html, heading
    assert "never used to choose" in html and "not used for selection" in html
    images = _images(html)
    # 2 comparison plots + 5 per study (front, hypervolume, hyperparameters, environments, mask density).
    assert len(images) == 12
    assert all(image.startswith(PNG_MAGIC) and len(image) > 5000 for image in images)
    assert "src='figures/" not in html and "<img src=\"http" not in html  # self-contained
    for column in ("mask.pref_ood", "environments.n_envs", "mask.sparsity_weight", "test.ood.recall@20",
                   "item_popularity", f"shift {MODALITIES[0]}", "violation z"):
        assert f"<th>{column}</th>" in html
    assert "What the environments are" in html
    # Logged to the primary study's parent run.
    logged = _artifacts(uri, outcomes["alpha"].parent_run_id, REPORT_ARTIFACT_PATH)
    assert f"{REPORT_ARTIFACT_PATH}/report.html" in logged
    assert f"{REPORT_ARTIFACT_PATH}/figures" in logged


def test_markdown_report_without_logging(store: tuple[str, Path, dict], tmp_path: Path) -> None:
    uri, _, outcomes = store
    out = tmp_path / "md"
    assert main(["report", "--experiment", "beta", "--tracking-uri", uri, "--output", str(out), "--format", "md",
                 "--no-log"]) == 0
    text = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(links) == 5
    assert all((out / link).read_bytes().startswith(PNG_MAGIC) for link in links)
    assert "| trial_id |" in text and "never used to choose" in text
    # the study driver logged its own HTML report when the study ended; --no-log adds nothing to it
    logged = _artifacts(uri, outcomes["beta"].parent_run_id, REPORT_ARTIFACT_PATH)
    assert f"{REPORT_ARTIFACT_PATH}/report.md" not in logged


def test_unknown_experiment_is_a_clear_error(store: tuple[str, Path, dict], tmp_path: Path) -> None:
    uri, _, _ = store
    with pytest.raises(PainvrlInputError, match=r"no MLflow experiment named 'nope'.*alpha"):
        load_study_runs(uri, "nope")
    result = subprocess.run(
        [sys.executable, str(REPO / "analysis" / "report.py"), "--experiment", "alpha", "--compare", "nope",
         "--tracking-uri", uri, "--output", str(tmp_path / "x"), "--no-log"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "no MLflow experiment named 'nope'" in result.stderr


def test_tracking_uri_is_required(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["report", "--experiment", "alpha"]) == 2
    assert "--tracking-uri is required" in capsys.readouterr().err


def test_new_plot_types(tmp_path: Path) -> None:
    from painvrl.analysis.plots import plot_front_hyperparameters, plot_fronts_overlay, plot_grouped_bars

    bars = pd.DataFrame({"trial": ["a", "a", "b"], "env": ["0", "1", "0"], "v": [0.2, 0.1, 0.3]})
    assert plot_grouped_bars(bars, "trial", "env", "v", tmp_path / "b.png", ylabel="recall@20 (fraction)"
                             ).read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(PainvrlInputError, match="'missing'"):
        plot_grouped_bars(bars, "trial", "missing", "v", tmp_path / "x.png", ylabel="y")
    front = pd.DataFrame({"obj": [0.1, 0.3, 0.2], "lr": [1e-3, 1e-2, 1e-4], "solver": ["mgda", "epo", "mgda"]})
    assert plot_front_hyperparameters(front, "obj", "maximize", ["lr", "solver"], tmp_path / "h.png"
                                      ).read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(PainvrlInputError):
        plot_front_hyperparameters(front, "obj", "maximize", [], tmp_path / "h2.png")
    rng = np.random.default_rng(0)
    tables = {name: pd.DataFrame(rng.uniform(size=(10, 2)), columns=["x", "y"]) for name in ("tpe", "random")}
    tables["tpe"].loc[0, "x"] = np.nan
    assert plot_fronts_overlay(tables, "x", "y", ["maximize", "minimize"], tmp_path / "o.png"
                               ).read_bytes().startswith(PNG_MAGIC)


def test_report_lists_method_model_baselines_against_the_front(tmp_path: Path) -> None:
    """A study with baselines over several methods: baselines.csv, the report's table and its front plot name
    each baseline ``method/model``, with its objectives, dominance both ways and the front's hypervolume over
    it; the best baseline is the reference point."""
    from painvrl.analysis.report_data import baselines_against_front, reference_baseline
    from painvrl.study.baselines import HYPERVOLUME_COLUMN

    uri = fresh_tracking_uri(tmp_path)
    outcome = make_study(tmp_path, uri, "gamma", n_trials=6, failed_trials=0, baselines=[
        ("erm", "vbpr", 0.20, 0.11), ("invrl", "vbpr", 0.22, 0.13), ("oracle", "vbpr", 0.12, 0.22)])
    csv = pd.read_csv(outcome.spec.study_dir() / "baselines.csv")
    assert list(csv["baseline"]) == ["erm/vbpr", "invrl/vbpr", "oracle/vbpr"]
    assert list(csv["method"]) == ["erm", "invrl", "oracle"] and set(csv["model"]) == {"vbpr"}
    assert outcome.reference_point == [0.22, 0.13]

    study = load_study_runs(uri, "gamma")
    assert list(study.baselines["baseline"]) == ["erm/vbpr", "invrl/vbpr", "oracle/vbpr"]
    assert reference_baseline(study) == "invrl/vbpr"
    table = baselines_against_front(study).set_index("baseline")
    assert {"method", "model", "val.iid.recall@20", "val.ood.recall@20", "test.ood.recall@20", "dominated by",
            "dominates front", HYPERVOLUME_COLUMN} <= set(table.columns)
    assert table.loc["oracle/vbpr", "dominated by"] == "none"  # no trial reaches its OOD recall
    assert table.loc["erm/vbpr", "dominated by"] != "none"
    assert table.loc["invrl/vbpr", HYPERVOLUME_COLUMN] == pytest.approx(outcome.hypervolume)
    assert table.loc["erm/vbpr", HYPERVOLUME_COLUMN] > table.loc["invrl/vbpr", HYPERVOLUME_COLUMN]

    out = tmp_path / "md"
    assert main(["report", "--experiment", "gamma", "--tracking-uri", uri, "--output", str(out), "--format", "md",
                 "--no-log"]) == 0
    text = (out / "report.md").read_text()
    assert "**Baselines against the front (validation; test reported, never used to choose)**" in text
    for label in ("erm/vbpr", "invrl/vbpr", "oracle/vbpr"):
        assert f"| {label} | {label.split('/')[0]} | vbpr |" in text
    assert "one marker shape per method (erm: star, invrl: plus, oracle: pentagon)" in text
    assert "takes the best baseline, invrl/vbpr, as its reference point" in text
    html = (outcome.spec.study_dir() / "report" / "report.html").read_text()  # written when the study ended
    assert "<td>oracle/vbpr</td>" in html and f"<th>{HYPERVOLUME_COLUMN}</th>" in html
    assert (outcome.spec.study_dir() / "front.png").read_bytes().startswith(PNG_MAGIC)
