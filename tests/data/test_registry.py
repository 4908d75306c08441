"""Dataset registry: dispatch, path checks, default MovieLens location, generic popularity OOD."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from painvrl.config import DatasetConfig, MovieLensConfig, SyntheticConfig
from painvrl.data.dataset import InteractionData
from painvrl.data.registry import LOADERS, apply_popularity_ood, load_dataset
from painvrl.errors import PainvrlInputError

ML = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ml-latest-small"
needs_movielens = pytest.mark.skipif(not ML.is_dir(), reason=f"{ML} is absent")


def _data(name: str = "files") -> InteractionData:
    """A stored-split dataset: 30 users x 10 positives over 60 items with a skewed item popularity."""
    rng = np.random.default_rng(0)
    weights = 1.0 / np.arange(1, 61)
    rows = [(u, int(i)) for u in range(30)
            for i in rng.choice(60, size=10, replace=False, p=weights / weights.sum())]
    pairs = np.array(rows, dtype=np.int64)
    position = np.arange(len(pairs)) % 10
    return InteractionData(name=name, n_users=30, n_items=60, train=pairs[position < 8], val=pairs[position == 8],
                           test=pairs[position == 9], features={"f": rng.normal(size=(60, 4))},
                           train_timestamps=np.arange(int((position < 8).sum())), info={"split": "explicit"})


def test_registry_names_every_config_dataset() -> None:
    assert set(LOADERS) == {"synthetic", "mmrec", "mmgcn", "movielens"}


def test_unknown_name_and_missing_paths_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(PainvrlInputError, match=r"dataset\.name"):
        load_dataset(DatasetConfig(name="nope"))  # type: ignore[arg-type]
    with pytest.raises(PainvrlInputError, match=r"dataset\.path.*does not exist"):
        load_dataset(DatasetConfig(name="movielens", path=str(tmp_path / "absent")))
    with pytest.raises(PainvrlInputError, match=r"dataset\.path.*required for dataset\.name=mmrec"):
        load_dataset(DatasetConfig(name="mmrec"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(PainvrlInputError, match=r"dataset\.path.*not a folder"):
        load_dataset(DatasetConfig(name="mmgcn", path=str(tmp_path / "file.txt")))


def test_movielens_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAINVRL_DATA", str(tmp_path))
    with pytest.raises(PainvrlInputError, match=r"dataset\.path.*ml-latest-small.*download_movielens"):
        load_dataset(DatasetConfig(name="movielens"))
    if ML.is_dir():
        monkeypatch.setenv("PAINVRL_DATA", str(ML.parent))
        data = load_dataset(DatasetConfig(name="movielens", movielens=MovieLensConfig(text_features="derived"),
                                          modalities=["genre_year"]))
        assert data.info["path"] == str(ML) and data.n_items == 6298


@needs_movielens
def test_movielens_provenance() -> None:
    cfg = DatasetConfig(name="movielens", path=str(ML), movielens=MovieLensConfig(text_features="derived"),
                        ood="temporal")
    data = load_dataset(cfg)
    assert data.info["dataset"] == "movielens"
    assert data.info["split_source"] == "random_per_user" and data.info["ood_source"] == "temporal"
    assert data.has_ood()


def test_synthetic_dispatch() -> None:
    data = load_dataset(DatasetConfig(name="synthetic", synthetic=SyntheticConfig(n_users=60, n_items=80,
                                                                                  interactions_per_user=10)))
    assert data.info["dataset"] == "synthetic" and data.n_users == 60


def test_popularity_ood_on_stored_splits() -> None:
    data = _data()
    result = apply_popularity_ood(data, ood_fraction=0.2, seed=0)
    assert result.ood_val is not None and result.ood_test is not None
    before = {tuple(p) for p in np.concatenate([data.train, data.val, data.test]).tolist()}
    kept = {s: {tuple(p) for p in getattr(result, s).tolist()} for s in ("train", "val", "test")}
    ood = {tuple(p) for p in np.concatenate([result.ood_val, result.ood_test]).tolist()}
    # stored membership is kept for what remains; nothing appears twice; nothing is invented
    for split in ("train", "val", "test"):
        assert kept[split] <= {tuple(p) for p in getattr(data, split).tolist()}
    union = kept["train"] | kept["val"] | kept["test"] | ood
    assert union <= before
    assert sum(map(len, kept.values())) + len(ood) == len(union)
    assert len(ood) + result.info["ood_dropped_unknown_user"] == round(0.2 * len(before))
    assert result.info["gini_items_ood"] < result.info["gini_items_before"]
    assert result.train_timestamps is not None and len(result.train_timestamps) == len(result.train)
    assert sum(result.info["ood_taken_from"].values()) == round(0.2 * len(before))


def _write_mmrec(folder: Path, ood_rows: bool = False) -> Path:
    """A tiny MMRec folder with the stored split of :func:`_data` (x_label 0/1/2, optionally 3/4)."""
    data = _data()
    folder.mkdir()
    lines = ["userID\titemID\ttimestamp\tx_label"]
    for label, pairs in enumerate((data.train, data.val, data.test)):
        lines.extend(f"{u}\t{i}\t{100 + k}\t{label}" for k, (u, i) in enumerate(pairs.tolist()))
    if ood_rows:
        lines.extend(["0\t59\t1\t3", "1\t59\t1\t4"])
    (folder / "tiny.inter").write_text("\n".join(lines) + "\n")
    np.save(folder / "image_feat.npy", data.features["f"], allow_pickle=False)
    return folder


def test_generic_ood_rules_on_a_stored_split_dataset(tmp_path: Path) -> None:
    """An MMRec folder without OOD rows: temporal refused (the loader keeps timestamps of training rows
    only), explicit refused, popularity built by the registry; with OOD rows, popularity is refused."""
    folder = str(_write_mmrec(tmp_path / "plain"))
    with pytest.raises(PainvrlInputError, match=r"dataset\.ood.*temporal needs the timestamp"):
        load_dataset(DatasetConfig(name="mmrec", path=folder, ood="temporal"))
    with pytest.raises(PainvrlInputError, match=r"dataset\.ood.*(no OOD|explicit)"):
        load_dataset(DatasetConfig(name="mmrec", path=folder, ood="explicit"))
    data = load_dataset(DatasetConfig(name="mmrec", path=folder, ood="popularity"))
    assert data.has_ood() and data.info["ood_source"] == "registry:popularity"
    assert data.info["split_source"] == "explicit"
    plain = load_dataset(DatasetConfig(name="mmrec", path=folder))
    assert not plain.has_ood() and plain.info["ood_source"] == "none"

    with_ood = str(_write_mmrec(tmp_path / "with-ood", ood_rows=True))
    assert load_dataset(DatasetConfig(name="mmrec", path=with_ood, ood="explicit")).info["ood_source"] == "explicit"
    with pytest.raises(PainvrlInputError, match=r"already has its own OOD rows"):
        load_dataset(DatasetConfig(name="mmrec", path=with_ood, ood="popularity"))
