"""The public TikTok micro-video release of MMSSL / DiffMM, fetched and converted to the MMRec layout.

The release (repository HKUDS/DiffMM, folder ``Datasets/tiktok`` at commit ``RELEASE_COMMIT``) holds:

- ``trnMat.pkl``, ``valMat.pkl``, ``tstMat.pkl``: pickled ``scipy.sparse`` COO matrices, users x items, a
  non-zero entry per positive (train / validation / test);
- ``image_feat.npy``, ``audio_feat.npy``: float16 ``[n_items, 128]`` item features, row i = item i.

The release's 768-d ``text_feat.npy`` is not fetched (``RELEASE_FILES`` lists what is). The conversion
(:func:`convert_release`) reads the pickles with :func:`painvrl.data.safeio.load_coo_pickle` (no unrestricted
unpickling) and writes ``DIR/tiktok.inter`` (TSV ``userID itemID rating x_label``; x_label 0 train, 1 valid,
2 test; rows grouped by split, each sorted by user then item) and ``DIR/<modality>_feat.npy`` as float32,
which :mod:`painvrl.data.mmrec` reads.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from painvrl.data.download import fetch
from painvrl.data.safeio import as_feature_matrix, load_coo_pickle, load_npy
from painvrl.errors import PainvrlInputError

RELEASE_COMMIT = "fae20e642aeeaad4284be6f7fb3432ebb551da8e"
RELEASE_URL = f"https://raw.githubusercontent.com/HKUDS/DiffMM/{RELEASE_COMMIT}/Datasets/tiktok"
"""Base URL of the release files (``RELEASE_URL/<file>``)."""
RELEASE_FILES: dict[str, str] = {
    "trnMat.pkl": "1efbc49d1a7ce5268f01e3e0c558df1f8f8644628c76aa6536be4ec61d256916",
    "valMat.pkl": "b6971ed696613d565613dd74b101c45b2aa002b66e8ba99cad03abf04db2397b",
    "tstMat.pkl": "e83a93787d88728572dbdd5b131bae01a90e17c340820e7b8f0a7c27e69d6f9e",
    "image_feat.npy": "f6c1ec1726ed2aa80315411199ab2143bee6333821bf58c5f00bd3f5b462efc2",
    "audio_feat.npy": "d45a44a9d462f578802de914c2feea5cfd45742b2922775a085b9bdc1beba26f",
}
"""Release file -> sha256 of the file at ``RELEASE_COMMIT``."""
SPLIT_FILES = {"trnMat.pkl": 0, "valMat.pkl": 1, "tstMat.pkl": 2}
"""Interaction matrix -> MMRec x_label."""
MODALITIES = ("image", "audio")
INTER_NAME = "tiktok.inter"


def _split_pairs(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    row, col, data, shape = load_coo_pickle(path)
    keep = data != 0
    pairs = np.unique(np.stack([row[keep], col[keep]], axis=1), axis=0)  # sorted by user, then item
    return pairs.reshape(-1, 2), shape


def convert_release(raw: Path, dest: Path) -> Path:
    """Write the MMRec layout of the release files in ``raw`` into the existing empty folder ``dest``."""
    frames, shapes = [], {}
    for name, label in SPLIT_FILES.items():
        pairs, shapes[name] = _split_pairs(raw / name)
        frames.append(pd.DataFrame({"userID": pairs[:, 0], "itemID": pairs[:, 1], "rating": 1, "x_label": label}))
    if len(set(shapes.values())) != 1:
        raise PainvrlInputError(f"{raw}: the interaction matrices differ in shape ({shapes})")
    n_items = next(iter(shapes.values()))[1]
    for modality in MODALITIES:
        path = raw / f"{modality}_feat.npy"
        features = as_feature_matrix(load_npy(path, expect_dtype_kind="iuf", expect_ndim=2), path)
        if features.shape[0] != n_items:
            raise PainvrlInputError(f"{path}: {features.shape[0]} rows, the interaction matrices have {n_items} "
                                    "items")
        np.save(dest / f"{modality}_feat.npy", features, allow_pickle=False)
    inter = pd.concat(frames, ignore_index=True)
    if inter.empty:
        raise PainvrlInputError(f"{raw}: no interactions in the release files")
    inter.to_csv(dest / INTER_NAME, sep="\t", index=False)
    return dest


def download_tiktok(dest: Path, url: str = RELEASE_URL, sha256: dict[str, str | None] | None = None,
                    timeout: float = 60.0) -> Path:
    """Fetch the release files from ``url`` (a base URL: ``url/<file>``; ``file://`` works), check each against
    ``sha256`` (default ``RELEASE_FILES``; a None entry skips that file's check), convert them into ``dest``
    and return it. Work happens in a temporary folder beside ``dest`` that is then renamed, so ``dest`` is either
    complete or absent; a ``dest`` that already holds the converted set is returned as is."""
    dest = Path(dest)
    if (dest / INTER_NAME).is_file() and all((dest / f"{m}_feat.npy").is_file() for m in MODALITIES):
        return dest
    if dest.exists() and any(dest.iterdir()):
        raise PainvrlInputError(f"{dest}: exists, is not empty and holds no {INTER_NAME}; choose an empty or new "
                                "folder")
    expected: dict[str, str | None] = dict(RELEASE_FILES) if sha256 is None else dict(sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".tiktok-download-") as tmp:
        raw, out = Path(tmp) / "raw", Path(tmp) / "converted"
        raw.mkdir()
        out.mkdir()
        for name in RELEASE_FILES:
            fetch(f"{url.rstrip('/')}/{name}", raw / name, expected.get(name), timeout)
        convert_release(raw, out)
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(out, dest)
    return dest

