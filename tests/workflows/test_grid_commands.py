"""``painvrl compare`` and ``painvrl suite`` on tiny grids with very short schedules, and the shared grid
statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from format_builders import write_mmrec

from painvrl.cli import main
from painvrl.workflows import compare, grid

TINY_MODEL = ["--set", "model.k_id=8", "--set", "model.k_f=8", "--set", "model.n_negatives=5",
              "--set", "train.batch_size=256"]


def test_mean_and_standard_error_skip_missing_values() -> None:
    assert grid.mean_se([0.1, 0.3, None, math.nan]) == "0.2000 ± 0.1000"
    assert grid.mean_se([0.25], digits=2) == "0.25" and grid.mean_se([None]) == "-"
    assert grid.standard_error([1.0]) == 0.0 and math.isnan(grid.finite_mean([]))


def test_compare_defaults_to_the_registered_backbones_and_methods() -> None:
    from painvrl.model.registry import MODELS
    from painvrl.training.methods import METHODS

    assert compare.default_models() == list(MODELS)
    assert set(compare.default_methods()) == {name for name in METHODS if name != "oracle"}


def test_compare_runs_a_grid_into_mlflow_and_rebuilds_the_table_from_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_mmrec(tmp_path / "toy", n_users=60, n_items=80, with_ood=False)
    results = tmp_path / "results.md"
    results.write_text("# results\n")
    uri = f"sqlite:///{tmp_path / 'compare.db'}"
    grid_args = ["--data", str(data), "--models", "lightgcn", "--methods", "erm", "ips", "--seeds", "0", "1",
                 "--mlflow", uri, "--results-file", str(results)]
    assert main(["compare", *grid_args, "--set", "train.epochs=2", "--set", "train.eval_every=1", *TINY_MODEL,
                 "--threads", "1", "--results-section", "toy"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| lightgcn | erm |"))
    assert row.count(" ± ") == 4 and row.endswith("| 2 |")  # IID and OOD recall/ndcg over 2 seeds
    ips = next(line for line in out.splitlines() if line.startswith("| lightgcn | ips |"))
    assert ips.count(" ± ") == 6  # and its paired IID / OOD differences to erm
    assert "<!-- compare:toy -->" in results.read_text() and row in results.read_text()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("compare-toy")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert sorted((r.data.params["split"], r.data.params["seed"]) for r in runs if r.data.params["method"] == "erm") \
        == [("popularity", "0"), ("popularity", "1"), ("published", "0"), ("published", "1")]
    assert main(["compare", *grid_args, "--from-mlflow"]) == 0
    assert row in capsys.readouterr().out


def _run(method: str, seed: int, split: str, iid: float, ood: float | None) -> dict[str, object]:
    test = {"iid": {"recall@20": iid, "ndcg@20": iid / 2}}
    if ood is not None:
        test["ood"] = {"recall@20": ood, "ndcg@20": ood / 2}
    return {"model": "m", "method": method, "seed": seed, "split": split, "wall_s": 1.0, "peak_rss_mb": 1.0,
            "metrics": {"test": test, "selection": {"epoch": 3}}}


def test_the_table_pairs_each_method_with_erm_by_seed() -> None:
    # A temporal split gives IID and OOD from the same runs; the differences pair seeds (0.02 and 0.04 here).
    runs = [_run("erm", 0, "temporal", 0.10, 0.05), _run("erm", 1, "temporal", 0.20, 0.07),
            _run("ips", 0, "temporal", 0.12, 0.04), _run("ips", 1, "temporal", 0.24, 0.07)]
    lines = compare.table(runs, ["m"], ["erm", "ips"]).splitlines()
    assert lines[2].startswith("| m | erm | 0.1500 ± 0.0500 |") and "|  |  |" in lines[2]
    cells = [cell.strip() for cell in lines[3].split("|")]
    assert cells[7] == "+0.0300 ± 0.0100" and cells[8] == "-0.0050 ± 0.0050"


def test_the_table_gives_the_learned_environments_of_the_shift_split() -> None:
    # painvrl learned two environments per seed: worst-environment recall over seeds, sizes as seed means
    # (largest first whatever the label order); erm learned none, so its cells stay empty.
    runs = [_run("erm", 0, "popularity", 0.10, 0.05), _run("erm", 1, "popularity", 0.20, 0.07)]
    for seed, sizes, worst in ((0, [300, 700], 0.06), (1, [800, 200], 0.10)):
        run = _run("painvrl", seed, "popularity", 0.12, 0.06)
        run["metrics"]["test"]["worst_env"] = {"recall@20": worst}  # type: ignore[index]
        run["metrics"]["environments"] = {"source": "learned", "sizes": sizes}  # type: ignore[index]
        runs.append(run)
    lines = compare.table(runs, ["m"], ["erm", "painvrl"]).splitlines()
    erm, painvrl = ([cell.strip() for cell in line.split("|")] for line in lines[2:4])
    assert lines[0].split("|")[9:11] == [" worst env R@20 ", " env sizes "]
    assert erm[9:11] == ["", ""]
    assert painvrl[9:11] == ["0.0800 ± 0.0200", "750 / 250"]


def test_compare_names_a_split_the_folder_cannot_give(tmp_path: Path) -> None:
    from painvrl.errors import PainvrlInputError

    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    assert compare.data_source(str(tmp_path), "temporal")[0] == "dataset.name=movielens"
    with pytest.raises(PainvrlInputError, match="no published split"):
        compare.data_source(str(tmp_path), "published")
    with pytest.raises(PainvrlInputError, match="timestamp"):
        compare.data_source(str(tmp_path / "mmrec"), "temporal")


def test_suite_runs_a_tiny_grid_logs_it_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "suite.jsonl"
    uri = f"sqlite:///{tmp_path / 'suite.db'}"
    tiny = ["--set", "dataset.synthetic.n_users=80", "--set", "dataset.synthetic.n_items=100",
            "--set", "dataset.synthetic.modality_dims=[6,6]", "--set", "train.epochs=2", *TINY_MODEL]
    args = ["suite", "--configs", "default", "--methods", "erm", "oracle", "--seeds", "0", "--out", str(out),
            "--threads", "1", "--mlflow", uri, *tiny]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "2 runs to do (0 already in" in printed and "2 runs, " in printed
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["method"] for r in runs) == ["erm", "oracle"] and all(r["config"] == "default" for r in runs)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("suite")
    assert experiment is not None and len(client.search_runs([experiment.experiment_id])) == 2
    assert main(args) == 0
    assert "0 runs to do (2 already in" in capsys.readouterr().out


def test_suite_names_an_unknown_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["suite", "--methods", "nope", "--report"]) == 2
    assert "unknown rows ['nope']" in capsys.readouterr().err


def test_compare_skips_the_pairs_a_run_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    from painvrl.errors import PainvrlInputError

    pairs = compare.supported_pairs(["ultragcn", "bm3", "freedom"], ["erm", "pda", "invpref"])
    assert ("bm3", "pda") not in pairs and ("freedom", "invpref") not in pairs
    assert {("ultragcn", "pda"), ("ultragcn", "invpref"), ("bm3", "erm"), ("freedom", "pda")} <= set(pairs)
    err = capsys.readouterr().err
    assert "skipping pda over bm3" in err and "skipping invpref over freedom" in err
    with pytest.raises(PainvrlInputError, match="no \\(backbone, method\\) pair"):
        compare.supported_pairs(["bm3"], ["pda"])


def test_compare_checks_its_inputs_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--data", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["compare", "--data", str(tmp_path), "--results-section", "x", "--results-file",
                 str(tmp_path / "missing.md")]) == 2
    assert "missing.md: no such file" in capsys.readouterr().err
