"""The repository speaks to users: no work-log language in tracked files, no pointers outside the repository.

History lives in git log. A tracked file must not refer to numbered work periods ("stop 12"), to issue numbers,
to closing notes or to lettered acceptance bars, and nothing outside tests/, benchmarks/ and .ci/ may point at
the ``../shared`` folder that sits beside a development checkout (users do not have it).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROCESS_LANGUAGE = re.compile(
    r"\bstops?[ -]?\d+\b|\bissues? #?\d+\b|closing note|\bbars? \([a-e]'?\)|\([a-e]\)\s*-\s*\([a-e]\)"
    r"|\bwork period", re.IGNORECASE)
OUTSIDE_POINTER = re.compile(r"\.\./shared\b|/work/shared\b|\b(ALGORITHM|DESIGN|STACK)\.md\b")
MAY_READ_SHARED_DATA = ("tests/", "benchmarks/", ".ci/")
THIS_FILE = "tests/test_repository_language.py"


def tracked_text_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    suffixes = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".ini", ".sh", ""}
    return [p for p in out.splitlines() if Path(p).suffix in suffixes and (ROOT / p).is_file() and p != THIS_FILE]


def hits(pattern: re.Pattern[str], paths: list[str]) -> list[str]:
    found = []
    for path in paths:
        try:
            text = (ROOT / path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            match = pattern.search(line)
            if match:
                found.append(f"{path}:{number}: {match.group(0)!r} in {line.strip()[:120]}")
    return found


def test_no_process_language_in_tracked_files() -> None:
    found = hits(PROCESS_LANGUAGE, tracked_text_files())
    assert not found, "work-log language in tracked files (say what the code does, not when):\n" + "\n".join(found)


def test_nothing_users_read_points_outside_the_repository() -> None:
    paths = [p for p in tracked_text_files() if not p.startswith(MAY_READ_SHARED_DATA)]
    found = hits(OUTSIDE_POINTER, paths)
    assert not found, "references to files outside the repository:\n" + "\n".join(found)


def test_the_patterns_catch_what_they_are_for() -> None:
    for text in ("Stop 15: the default", "stop-13 variant", "see issue 3", "the closing note of", "bar (b) fails",
                 "bars (a)-(e)"):
        assert PROCESS_LANGUAGE.search(text), text
    for text in ("early stopping after 5 evaluations", "the loop stops when labels settle", "non-stop"):
        assert not PROCESS_LANGUAGE.search(text), text
    assert OUTSIDE_POINTER.search("read ../shared/ALGORITHM.md")
