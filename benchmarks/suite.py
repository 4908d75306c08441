"""The methods over the family of synthetic benchmark shifts: ``painvrl suite`` (painvrl/workflows/suite.py),
for commands that name this script.

    PYTHONPATH=. .venv/bin/python benchmarks/suite.py --seeds 0 1 --jobs 2 --out suite.jsonl
    PYTHONPATH=. .venv/bin/python benchmarks/suite.py --report --out suite.jsonl
"""

from __future__ import annotations

import sys

from painvrl.cli import main

if __name__ == "__main__":
    sys.exit(main(["suite", *sys.argv[1:]]))
