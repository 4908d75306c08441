"""``painvrl download``: the TikTok release converted from small local files of the release's formats
(pickled scipy COO matrices, float16 feature arrays) served over file://, checksums and the restricted
unpickler; the older ``download-movielens`` spelling."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from painvrl.cli import main, modern_spelling
from painvrl.data import tiktok
from painvrl.data.safeio import load_coo_pickle
from painvrl.errors import PainvrlInputError

N_USERS, N_ITEMS = 30, 40


def _old_scipy_pickle(state: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> bytes:
    """``state`` pickled as older scipy releases pickled a COO matrix: class ``scipy.sparse.coo.coo_matrix``
    (a module this scipy no longer has), attribute dict with row / col arrays."""
    cls = type("coo_matrix", (), {"__module__": "scipy.sparse.coo"})
    module = types.ModuleType("scipy.sparse.coo")
    module.coo_matrix = cls  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "scipy.sparse.coo", module)
    matrix = cls()
    matrix.__dict__.update(state)
    return pickle.dumps(matrix, protocol=3)


def _old_state(matrix: sp.coo_matrix) -> dict[str, object]:
    return {"_shape": matrix.shape, "maxprint": 50, "row": matrix.row.astype(np.int32),
            "col": matrix.col.astype(np.int32), "data": matrix.data, "has_canonical_format": False}


def write_release(folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[int, set[tuple[int, int]]]:
    """The release's five files at a small size; returns the positives per x_label."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    cells = rng.permutation(N_USERS * N_ITEMS)[:300]
    split = {0: cells[:200], 1: cells[200:250], 2: cells[250:]}
    positives = {}
    for (name, label) in tiktok.SPLIT_FILES.items():
        users, items = np.divmod(split[label], N_ITEMS)
        positives[label] = set(zip(users.tolist(), items.tolist(), strict=True))
        matrix = sp.coo_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(N_USERS, N_ITEMS))
        # the training matrix as an older scipy pickled it, the others as this one does
        data = _old_scipy_pickle(_old_state(matrix), monkeypatch) if label == 0 else pickle.dumps(matrix, protocol=3)
        (folder / name).write_bytes(data)
    for modality in tiktok.MODALITIES:
        np.save(folder / f"{modality}_feat.npy", rng.normal(size=(N_ITEMS, 16)).astype(np.float16))
    return positives


def _digests(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in tiktok.RELEASE_FILES}


def test_download_tiktok_converts_the_release_to_mmrec_and_prints_its_summary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "release"
    positives = write_release(raw, monkeypatch)
    monkeypatch.setattr(tiktok, "RELEASE_FILES", _digests(raw))
    dest = tmp_path / "data" / "tiktok"
    assert main(["download", "tiktok", str(dest), "--url", raw.as_uri()]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[:printed.rindex("}") + 1])
    assert summary["n_users"] == N_USERS and summary["n_items"] == N_ITEMS
    assert summary["modalities"] == {"audio": 16, "image": 16}
    assert sorted(p.name for p in dest.iterdir()) == ["audio_feat.npy", "image_feat.npy", "tiktok.inter"]
    inter = pd.read_csv(dest / "tiktok.inter", sep="\t")
    assert list(inter.columns) == ["userID", "itemID", "rating", "x_label"] and (inter["rating"] == 1).all()
    assert inter["x_label"].is_monotonic_increasing
    for label, pairs in positives.items():
        rows = inter[inter["x_label"] == label]
        assert list(zip(rows["userID"], rows["itemID"], strict=True)) == sorted(pairs)
    features = np.load(dest / "image_feat.npy", allow_pickle=False)
    assert features.dtype == np.float32 and features.shape == (N_ITEMS, 16)
    np.testing.assert_array_equal(features, np.load(raw / "image_feat.npy").astype(np.float32))
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".tiktok-download")]


def test_a_file_that_differs_from_the_pinned_release_is_refused_unless_checks_are_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "release"
    write_release(raw, monkeypatch)
    assert main(["download", "tiktok", str(tmp_path / "bad"), "--url", raw.as_uri()]) == 2
    assert "trnMat.pkl: sha256" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(["download", "tiktok", str(tmp_path / "ok"), "--url", raw.as_uri(), "--no-checksum"]) == 0
    assert (tmp_path / "ok" / "tiktok.inter").is_file()


class RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, ("echo pwned",)


def test_the_interaction_pickles_are_read_without_running_code(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    evil = tmp_path / "trnMat.pkl"
    evil.write_bytes(pickle.dumps(RunsCode()))
    with pytest.raises(PainvrlInputError, match=r"trnMat.pkl: refused to unpickle: global '(posix|nt).system'"):
        load_coo_pickle(evil)
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(PainvrlInputError, match="expected a pickled scipy COO matrix"):
        load_coo_pickle(tmp_path / "list.pkl")
    state = {"_shape": (3, 3), "row": np.array([5]), "col": np.array([1]), "data": np.ones(1)}
    (tmp_path / "outside.pkl").write_bytes(_old_scipy_pickle(state, monkeypatch))
    with pytest.raises(PainvrlInputError, match="outside the matrix shape"):
        load_coo_pickle(tmp_path / "outside.pkl")


def test_the_older_movielens_spelling_is_the_download_command(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert modern_spelling(["-v", "download-movielens", "d"]) == ["-v", "download", "movielens", "d"]
    archive = tmp_path / "ml.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-latest-small/ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")
        zf.writestr("ml-latest-small/movies.csv", "movieId,title,genres\n1,Toy Story (1995),Animation\n")
    for argv in (["download-movielens"], ["download", "movielens"]):
        dest = tmp_path / argv[-1]
        assert main([*argv, str(dest), "--url", archive.as_uri(), "--no-checksum"]) == 0
        assert capsys.readouterr().out.strip() == str(dest) and (dest / "ratings.csv").is_file()
    assert main(["download", "movielens", str(tmp_path / "x"), "--url", archive.as_uri()]) == 2
    assert "--url needs --sha256" in capsys.readouterr().err
