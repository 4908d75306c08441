"""Fetching public dataset files: streamed to disk, checked against a known sha256 (never called by tests)."""

from __future__ import annotations

import hashlib
import logging
import shutil
import urllib.request
from pathlib import Path

from painvrl.errors import PainvrlInputError

logger = logging.getLogger(__name__)


def sha256_file(file: Path) -> str:
    """Hex sha256 of ``file``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(file: Path, expected: str | None, source: str) -> None:
    """Raise a :class:`PainvrlInputError` naming ``source`` when ``file``'s sha256 is not ``expected`` (None:
    no check)."""
    if expected is not None and (actual := sha256_file(file)) != expected.lower():
        raise PainvrlInputError(f"{source}: sha256 {actual} does not match the expected {expected}")


def fetch(url: str, target: Path, sha256: str | None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target`` and check its sha256 (None: no check); returns ``target``."""
    logger.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=timeout) as response, target.open("wb") as out:
        shutil.copyfileobj(response, out)
    check_sha256(target, sha256, url)
    return target
