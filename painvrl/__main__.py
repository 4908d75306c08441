"""``python -m painvrl`` = the ``painvrl`` command."""

from __future__ import annotations

from painvrl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
