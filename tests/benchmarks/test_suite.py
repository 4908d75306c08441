"""benchmarks/suite.py --report: the bar counts and the front check read the rows the options name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "suite.py"


def _runs() -> list[dict[str, Any]]:
    """Two configurations x two seeds: erm OOD 0.10, oracle 0.20 (a meaningful shift, gap 0.10). The rows
    'painvrl P' close 10% / 20% / 30% of the gap; the rows 'painvrl P, short' close 20% / 50% / 80%."""
    closed = {"painvrl {p}": (0.1, 0.2, 0.3), "painvrl {p}, short": (0.2, 0.5, 0.8)}
    out: list[dict[str, Any]] = []
    for config in ("default", "warm IID"):
        for seed in (0, 1):
            jitter = 0.0005 * seed
            base = {"config": config, "seed": seed, "ari": 0.1, "spurious_open": 0.0, "overrides": []}
            out.append({**base, "method": "erm", "iid": 0.40, "ood": 0.10 + jitter, "auc": None, "seconds": 10.0})
            out.append({**base, "method": "erm, timed", "iid": 0.40, "ood": 0.10 + jitter, "auc": None,
                        "seconds": 5.0})
            out.append({**base, "method": "oracle", "iid": 0.30, "ood": 0.20 + jitter, "auc": 1.0, "seconds": 10.0})
            for template, fractions in closed.items():
                for pref, fraction in zip(("0.1", "0.5", "0.9"), fractions, strict=True):
                    out.append({**base, "method": template.format(p=pref), "iid": 0.39, "auc": 0.9,
                                "ood": 0.10 + jitter + fraction * 0.10, "seconds": 20.0})
    return out


def _report(tmp_path: Path, *options: str) -> str:
    path = tmp_path / "suite.jsonl"
    path.write_text("".join(json.dumps(run) + "\n" for run in _runs()))
    rows = ["--methods", "erm", "oracle", *[f"--extra=painvrl {p}{s}=method=painvrl" for p in ("0.1", "0.5", "0.9")
                                          for s in ("", ", short")]]
    done = subprocess.run([sys.executable, str(SCRIPT), "--report", "--out", str(path), *rows, *options], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_bars_read_the_default_rows(tmp_path: Path) -> None:
    out = _report(tmp_path)
    assert "closes >= 40% of the gap with mask AUC >= 0.85 on 0 of 2 configurations" in out
    assert "keeps >= 95% of erm's IID recall on 2 of 2" in out
    assert "traces a front" in out and "on 0 of 2 configurations" in out


def test_the_bars_read_the_rows_of_another_schedule(tmp_path: Path) -> None:
    out = _report(tmp_path, "--sweep", "painvrl {pref}, short")
    assert "closes >= 40% of the gap with mask AUC >= 0.85 on 2 of 2 configurations" in out
    assert "on 2 of 2 configurations with a meaningful shift" in out


def test_time_ratios_divide_by_the_named_row(tmp_path: Path) -> None:
    default = _report(tmp_path)
    assert "| 2.0 ± 0.0 |" in default  # 20 s / erm's 10 s
    timed = _report(tmp_path, "--time-base", "erm, timed", "--extra=erm, timed=method=erm")
    assert "| 4.0 ± 0.0 |" in timed  # 20 s / 5 s
