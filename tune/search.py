"""Run a PaInvRL study: ``painvrl study`` (painvrl/workflows/study.py), for commands that name this script.

    python tune/search.py                                  # the default study (synthetic, local Ray, sqlite MLflow)
    python tune/search.py --config smoke --set num_samples=4
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python tune/search.py --config gpu-cluster

Ray puts a job's working directory on PYTHONPATH, so the uploaded checkout's ``painvrl`` is the one imported.
"""

from __future__ import annotations

import sys

from painvrl.cli import main

if __name__ == "__main__":
    sys.exit(main(["study", *sys.argv[1:]]))
