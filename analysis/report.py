"""Study report over MLflow: ``painvrl report`` (painvrl/workflows/report.py), for commands that name this script.

    python analysis/report.py --experiment NAME [--compare NAME ...] [--tracking-uri URI] [--output DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    try:
        import painvrl  # noqa: F401
    except ImportError:  # run from a checkout without an install
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from painvrl.cli import main

    sys.exit(main(["report", *sys.argv[1:]]))
