"""benchmarks/proof_synthetic.py --from-json: pooling saved runs of several seed ranges into one bar check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "proof_synthetic.py"
# (iid, ood, auc) per row: a benchmark where every bar passes.
ROWS = {"erm": (0.10, 0.03, None), "oracle": (0.10, 0.07, 1.0), "invrl": (0.10, 0.04, 0.7),
        "painvrl": (0.10, 0.06, 0.95), "painvrl pref_ood=0.1": (0.11, 0.04, 0.8),
        "painvrl pref_ood=0.9": (0.09, 0.065, 0.95), "painvrl known envs": (0.10, 0.065, 0.95),
        "painvrl no IRM": (0.10, 0.035, 0.7)}


def _runs(seeds: range, overrides: list[str] | None = None) -> list[dict[str, Any]]:
    out = []
    for name, (iid, ood, auc) in ROWS.items():
        for seed in seeds:
            jitter = 0.001 * (seed % 3 - 1)
            out.append({"name": name, "seed": seed, "overrides": overrides or [], "iid": iid + jitter,
                        "ood": ood + jitter, "auc": auc, "auc_logits": auc, "ari": None if auc is None else 0.0,
                        "density": 0.5, "epoch": 3 + seed % 2, "seconds": 1.0})
    return out


def _pool(tmp_path: Path, *parts: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    paths = []
    for index, part in enumerate(parts):
        path = tmp_path / f"part{index}.json"
        path.write_text(json.dumps(part))
        paths.append(str(path))
    return subprocess.run([sys.executable, str(SCRIPT), "--from-json", *paths], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": ""})


def test_two_seed_ranges_pool_into_one_table(tmp_path: Path) -> None:
    result = _pool(tmp_path, _runs(range(0, 3)), _runs(range(3, 6)))
    assert result.returncode == 0, result.stderr
    assert "seeds [0, 1, 2, 3, 4, 5], pooled from" in result.stdout
    assert "FAIL" not in result.stdout and result.stdout.count("PASS") == 6
    assert "sel. epoch" in result.stdout and "3.5 ± 0.5" in result.stdout  # selected epochs 3, 4, 3, 4, 3, 4
    assert "gap closed 0.75" in result.stdout  # (0.06 - 0.03) / (0.07 - 0.03), jitter cancels over the seeds


def test_runs_made_with_different_overrides_are_not_pooled(tmp_path: Path) -> None:
    result = _pool(tmp_path, _runs(range(0, 3)), _runs(range(3, 6), ["mask.pref_ood=0.7"]))
    assert result.returncode != 0
    assert "different overrides" in result.stderr


def test_paired_differences_cancel_the_world_to_world_spread(tmp_path: Path) -> None:
    # Every row moves with the seed by the same jitter (one world per seed): the paired difference is exact.
    runs = _runs(range(0, 6))
    for run in runs:
        shift = 0.02 * run["seed"]
        run["iid"] += shift
        run["ood"] += shift
    result = _pool(tmp_path, runs)
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if ln.strip().startswith("painvrl ") and " - invrl" in ln)
    assert "IID +0.0000 ± 0.0000" in line and "OOD +0.0200 ± 0.0000" in line and "n=6" in line
    assert "oracle" in result.stdout.split("paired per-seed differences")[1]


def test_against_pairs_each_row_with_another_settings_runs_of_the_same_seed(tmp_path: Path) -> None:
    """--against: per row, these runs minus the other setting's runs of the same seeds; a seed only one side ran
    does not count."""
    these, other = _runs(range(0, 4)), _runs(range(0, 5), ["environments.init=random"])
    for run in these:
        if run["name"] == "painvrl":
            run["ood"] += 0.01 * (1 + run["seed"] % 2)  # +0.01 on even seeds, +0.02 on odd ones
    (tmp_path / "these.json").write_text(json.dumps(these))
    (tmp_path / "other.json").write_text(json.dumps(other))
    result = subprocess.run([sys.executable, str(SCRIPT), "--from-json", str(tmp_path / "these.json"), "--against",
                             str(tmp_path / "other.json")], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert result.returncode == 0, result.stderr
    section = result.stdout.split("minus the --against runs")[1].splitlines()
    painvrl = next(ln for ln in section if ln.strip().startswith("painvrl ") and "pref_ood" not in ln)
    assert "OOD +0.0150 ± 0.0029" in painvrl and "IID +0.0000 ± 0.0000" in painvrl and "n=4" in painvrl
    erm = next(ln for ln in section if ln.strip().startswith("erm "))
    assert "OOD +0.0000" in erm and "AUC" not in erm
