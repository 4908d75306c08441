"""Backbones x methods x splits x seeds on real data into MLflow and a table: ``painvrl compare``
(painvrl/workflows/compare.py), for commands that name this script.

    PYTHONPATH=. .venv/bin/python benchmarks/compare.py --data data/tiktok --models vbpr --methods erm painvrl
"""

from __future__ import annotations

import sys

from painvrl.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
