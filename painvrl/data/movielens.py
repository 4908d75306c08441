"""MovieLens (GroupLens layout: ratings.csv, movies.csv, optional tags.csv) with real text features.

Positives are ratings >= ``dataset.movielens.rating_threshold``. Items are the movies with at least one positive and
users the users with at least one positive, both re-indexed densely in ascending id order
(``info["item_external_ids"]`` / ``info["user_external_ids"]`` map back to movieId / userId).

Modalities (docs/algorithm.md L2-normalises each block):
- ``title``: MiniLM embedding of the title string exactly as in movies.csv, e.g. "Toy Story (1995)".
- ``tags``: MiniLM embedding of the movie's lower-cased tags, distinct, in descending frequency (ties in first
  appearance order in tags.csv), joined by ", ". Untagged movies have a zero row and
  ``feature_present["tags"]`` False: a missing modality, not an observation.
- ``genre_year``: multi-hot of the genre labels (derived/genre_names.json order when present, else sorted),
  the release year parsed from the title standardised over the items, and a flag column set where the year is
  missing (its year value is then 0).

``dataset.movielens.text_features="encode"`` encodes with :func:`painvrl.data.features.encode_texts` (cached under
``dataset.movielens.feature_cache`` or ``<path>/.painvrl-cache``, or ``~/.cache/painvrl`` when the data folder is
read-only); ``"derived"`` reads the precomputed derived/*.npy vectors (rows in movies.csv order,
derived/item_ids.npy gives each row's movieId).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from painvrl.config import DatasetConfig
from painvrl.data.dataset import InteractionData
from painvrl.data.download import fetch, sha256_file
from painvrl.data.shifts import build_splits
from painvrl.errors import PainvrlInputError

logger = logging.getLogger(__name__)

OFFICIAL_ZIP_URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
OFFICIAL_ZIP_SHA256 = "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436"
"""sha256 of the official ml-latest-small.zip (978,202 bytes, generated 2018-09-26), as published by several
independent projects that pin it; the extracted CSVs are additionally checked against FILE_SHA256."""
FILE_SHA256 = {
    "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
    "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
    "tags.csv": "92a9f8bb7916dceef6151209845788c3643f794dfa79d1feaec7121b5960399d",
}
"""sha256 of the CSVs inside the official zip."""

MODALITIES = ("title", "tags", "genre_year")
NO_GENRE = "(no genres listed)"
_YEAR = re.compile(r"\((\d{4})(?:\s*[-\u2013]\s*\d{0,4})?\)\s*$")

_RATINGS = {"userId": "int", "movieId": "int", "rating": "float", "timestamp": "int"}
_MOVIES = {"movieId": "int", "title": "str", "genres": "str"}
_TAGS = {"userId": "int", "movieId": "int", "tag": "str", "timestamp": "int"}


# ------------------------------------------------------------------------------------------- reading


def read_table(file: Path, columns: dict[str, str]) -> pd.DataFrame:
    """Read one CSV and check it: required columns present, no missing values, numeric columns numeric
    (and integral for "int"). Errors name the file, the column and the first bad line."""
    if not file.is_file():
        raise PainvrlInputError(f"{file}: not found (MovieLens needs ratings.csv and movies.csv in the GroupLens "
                                "layout; tags.csv is optional)")
    try:
        frame = pd.read_csv(file, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PainvrlInputError(f"{file}: not a readable CSV ({exc})") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PainvrlInputError(f"{file}: missing column(s) {missing} (found {list(frame.columns)})")
    out = pd.DataFrame(index=frame.index)
    for column, kind in columns.items():
        raw = frame[column].str.strip() if kind != "str" else frame[column]
        empty = (raw.str.strip() == "").to_numpy()
        if empty.any():
            line = int(np.flatnonzero(empty)[0]) + 2
            raise PainvrlInputError(f"{file}: column '{column}' has {int(empty.sum())} missing value(s) "
                                    f"(first at line {line})")
        if kind == "str":
            out[column] = raw
            continue
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if kind == "int":
            bad |= np.isfinite(values) & (values != np.round(values))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise PainvrlInputError(f"{file}: column '{column}' must be {'integer' if kind == 'int' else 'numeric'}"
                                    f"; got {raw.iloc[first]!r} at line {first + 2} ({int(bad.sum())} bad value(s))")
        out[column] = values.astype(np.int64) if kind == "int" else values
    return out


def read_movielens(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """(ratings, movies, tags or None), validated."""
    path = Path(path)
    if not path.is_dir():
        raise PainvrlInputError(f"dataset.path {path}: not a folder (expected the GroupLens ml-latest-small "
                                "layout)")
    ratings = read_table(path / "ratings.csv", _RATINGS)
    movies = read_table(path / "movies.csv", _MOVIES)
    tags = read_table(path / "tags.csv", _TAGS) if (path / "tags.csv").is_file() else None
    duplicated = movies["movieId"].duplicated().to_numpy()
    if duplicated.any():
        raise PainvrlInputError(f"{path / 'movies.csv'}: column 'movieId' repeats id "
                                f"{int(movies['movieId'].to_numpy()[duplicated][0])}")
    unknown = ~ratings["movieId"].isin(movies["movieId"]).to_numpy()
    if unknown.any():
        raise PainvrlInputError(f"{path / 'ratings.csv'}: column 'movieId' has {int(unknown.sum())} id(s) not in "
                                f"movies.csv (first {int(ratings['movieId'].to_numpy()[unknown][0])})")
    return ratings, movies, tags


# ------------------------------------------------------------------------------------------- features


def tag_texts(tags: pd.DataFrame | None, movie_ids: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Per movie: its distinct lower-cased tags by descending count (ties: first appearance), joined by ", ";
    and a bool mask of movies that have tags."""
    texts = [""] * len(movie_ids)
    present = np.zeros(len(movie_ids), dtype=bool)
    if tags is None or len(tags) == 0:
        return texts, present
    row_of = {int(m): i for i, m in enumerate(movie_ids)}
    counts: dict[int, dict[str, int]] = {}
    for movie, tag in zip(tags["movieId"].to_numpy(), tags["tag"].str.lower().to_numpy(), strict=True):
        if int(movie) in row_of:
            per_movie = counts.setdefault(row_of[int(movie)], {})
            per_movie[tag] = per_movie.get(tag, 0) + 1  # dicts keep first-appearance order
    for row, per_movie in counts.items():
        ordered = sorted(per_movie, key=lambda t: -per_movie[t])  # stable: ties stay in appearance order
        texts[row] = ", ".join(ordered)
        present[row] = True
    return texts, present


def genre_year_features(titles: list[str], genres: list[str], genre_names: list[str]) -> np.ndarray:
    """float32 [n, len(genre_names) + 2]: genre multi-hot, standardised release year, year-missing flag."""
    column = {g: j for j, g in enumerate(genre_names)}
    matrix = np.zeros((len(titles), len(genre_names) + 2), dtype=np.float32)
    years = np.full(len(titles), np.nan)
    for i, (title, labels) in enumerate(zip(titles, genres, strict=True)):
        for label in labels.split("|"):
            matrix[i, column[label]] = 1.0
        match = _YEAR.search(title)
        if match:
            years[i] = float(match.group(1))
    has_year = np.isfinite(years)
    if has_year.any():
        std = years[has_year].std()
        matrix[has_year, -2] = (years[has_year] - years[has_year].mean()) / (std if std > 0 else 1.0)
    matrix[~has_year, -1] = 1.0
    return matrix


def _genre_names(path: Path, genres: list[str]) -> list[str]:
    labels = sorted({g for text in genres for g in text.split("|")})
    file = path / "derived" / "genre_names.json"
    if not file.is_file():
        return labels
    try:
        names = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PainvrlInputError(f"{file}: not valid JSON ({exc})") from exc
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise PainvrlInputError(f"{file}: expected a JSON list of genre labels")
    extra = [g for g in labels if g not in names]
    if extra:
        logger.warning("%s: genres %s not listed; appended as extra columns", file, extra)
    return list(names) + extra


def _derived_text(path: Path, movie_ids: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    folder = path / "derived"
    files = {"item_ids": "item_ids.npy", "title": "title_minilm_l6_v2.npy", "tags": "tags_minilm_l6_v2.npy",
             "tags_mask": "tags_mask.npy"}
    arrays = {}
    for key, name in files.items():
        if not (folder / name).is_file():
            raise PainvrlInputError(f"{folder / name}: not found (dataset.movielens.text_features=derived needs the "
                                    "precomputed vectors; use dataset.movielens.text_features=encode to compute them)")
        arrays[key] = np.load(folder / name, allow_pickle=False)
    ids = arrays["item_ids"]
    for key in ("title", "tags", "tags_mask"):
        if len(arrays[key]) != len(ids):
            raise PainvrlInputError(f"{folder / files[key]}: {len(arrays[key])} rows but item_ids.npy has {len(ids)}")
    row_of = {int(m): i for i, m in enumerate(ids)}
    absent = [int(m) for m in movie_ids if int(m) not in row_of]
    if absent:
        raise PainvrlInputError(f"{folder / 'item_ids.npy'}: movieId {absent[0]} (and {len(absent) - 1} more) "
                                "has no precomputed row")
    rows = np.array([row_of[int(m)] for m in movie_ids], dtype=np.int64)
    mask = arrays["tags_mask"][rows].astype(bool)
    return {"title": (arrays["title"][rows], None), "tags": (arrays["tags"][rows] * mask[:, None], mask)}


def _writable(folder: Path) -> bool:
    """Writable for us AND not marked read-only by its mode bits (root ignores the bits; we respect them so a
    shared read-only data folder is never written into)."""
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False


def feature_cache_dir(path: Path, cfg: DatasetConfig) -> Path:
    """cfg.movielens.feature_cache, else <path>/.painvrl-cache, else (read-only data folder) ~/.cache/painvrl."""
    if cfg.movielens.feature_cache:
        return Path(cfg.movielens.feature_cache).expanduser()
    candidate = path / ".painvrl-cache"
    if _writable(path) and (not candidate.exists() or _writable(candidate)):
        try:
            candidate.mkdir(exist_ok=True)
            return candidate
        except OSError:
            pass
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    logger.info("data folder %s is read-only; caching text features under %s", path, home / "painvrl")
    return home / "painvrl"


def _item_features(path: Path, cfg: DatasetConfig, items: pd.DataFrame, tags: pd.DataFrame | None,
                   wanted: list[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    movie_ids = items["movieId"].to_numpy()
    titles, genres = items["title"].tolist(), items["genres"].tolist()
    features: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    if {"title", "tags"} & set(wanted):
        if cfg.movielens.text_features == "derived":
            text = _derived_text(path, movie_ids)
        else:
            from painvrl.data.features import EMBEDDING_DIM, encode_texts

            cache = feature_cache_dir(path, cfg)
            tag_strings, mask = tag_texts(tags, movie_ids)
            tag_matrix = np.zeros((len(movie_ids), EMBEDDING_DIM), dtype=np.float32)
            if "tags" in wanted and mask.any():
                tag_matrix[mask] = encode_texts([t for t, m in zip(tag_strings, mask, strict=True) if m], cache)
            text = {"tags": (tag_matrix, mask)}
            if "title" in wanted:
                text["title"] = (encode_texts(titles, cache), None)
        for modality in ("title", "tags"):
            if modality in wanted:
                features[modality], mask_or_none = text[modality]
                if mask_or_none is not None:
                    present[modality] = mask_or_none
    if "genre_year" in wanted:
        features["genre_year"] = genre_year_features(titles, genres, _genre_names(path, genres))
    return {m: features[m] for m in wanted}, present


# ------------------------------------------------------------------------------------------- loading


def load_movielens(path: Path, cfg: DatasetConfig) -> InteractionData:
    """Build InteractionData from a GroupLens MovieLens folder (see the module docstring)."""
    path = Path(path)
    wanted = list(cfg.modalities) or list(MODALITIES)
    unknown = [m for m in wanted if m not in MODALITIES]
    if unknown:
        raise PainvrlInputError(f"config field 'dataset.modalities': {unknown} not provided by movielens "
                                f"(available: {list(MODALITIES)})")
    if cfg.split not in ("random", "temporal"):
        raise PainvrlInputError(f"config field 'dataset.split': movielens supports random or temporal, not "
                                f"{cfg.split!r}")
    if cfg.ood not in ("none", "temporal", "popularity"):
        raise PainvrlInputError(f"config field 'dataset.ood': movielens supports none, temporal or popularity, "
                                f"not {cfg.ood!r}")
    ratings, movies, tags = read_movielens(path)
    positive = ratings[ratings["rating"] >= cfg.movielens.rating_threshold].sort_values("timestamp", kind="stable")
    n_duplicates = int(positive.duplicated(["userId", "movieId"]).sum())
    positive = positive.drop_duplicates(["userId", "movieId"], keep="first")  # earliest positive rating
    if positive.empty:
        raise PainvrlInputError(f"{path / 'ratings.csv'}: no rating >= dataset.movielens.rating_threshold="
                                f"{cfg.movielens.rating_threshold}")
    user_ids = np.unique(positive["userId"].to_numpy())
    item_ids = np.unique(positive["movieId"].to_numpy())
    pairs = np.stack([np.searchsorted(user_ids, positive["userId"].to_numpy()),
                      np.searchsorted(item_ids, positive["movieId"].to_numpy())], axis=1).astype(np.int64)
    timestamps = positive["timestamp"].to_numpy()
    items = movies.set_index("movieId").loc[item_ids].reset_index()
    features, present = _item_features(path, cfg, items, tags, wanted)
    # per-user temporal OOD keeps far more OOD users on MovieLens (see shifts.temporal_ood); selected by a
    # `dataset.temporal_scope: global | user` config field where the config defines one
    per_user = getattr(cfg, "temporal_scope", "global") == "user"
    plan = build_splits(pairs, timestamps, n_users=len(user_ids), n_items=len(item_ids), split=cfg.split,
                        ood=cfg.ood, ood_fraction=cfg.ood_fraction, seed=cfg.seed, temporal_per_user=per_user)
    info: dict[str, Any] = {
        "source": str(path),
        "rating_threshold": cfg.movielens.rating_threshold,
        "n_ratings": len(ratings),
        "n_positives": len(pairs),
        "n_duplicate_positives": n_duplicates,
        "n_movies_listed": len(movies),
        "n_tagged_items": int(present["tags"].sum()) if "tags" in present else 0,
        "text_features": cfg.movielens.text_features,
        "item_external_ids": item_ids,
        "user_external_ids": user_ids,
        "item_titles": np.asarray(items["title"].tolist(), dtype=str),
        **plan.info,
    }
    return InteractionData(name="movielens", n_users=len(user_ids), n_items=len(item_ids), train=plan.train,
                           val=plan.val, test=plan.test, features=features, ood_val=plan.ood_val,
                           ood_test=plan.ood_test, feature_present=present,
                           train_timestamps=plan.train_timestamps, info=info)


# ------------------------------------------------------------------------------------------- download


def download_movielens(dest: Path, url: str = OFFICIAL_ZIP_URL, sha256: str | None = OFFICIAL_ZIP_SHA256,
                       timeout: float = 60.0) -> Path:
    """Download and unpack ml-latest-small into ``dest`` (needs internet; never called by tests).

    The zip is checked against ``sha256`` (pass ``None`` to skip for another URL) and, for the official
    archive, each CSV against FILE_SHA256. Extraction goes to a temporary folder beside ``dest`` that is then
    renamed, so ``dest`` is either complete or absent. Returns ``dest``.
    """
    dest = Path(dest)
    if (dest / "ratings.csv").is_file() and (dest / "movies.csv").is_file():
        return dest
    if dest.exists() and any(dest.iterdir()):
        raise PainvrlInputError(f"{dest}: exists, is not empty and holds no ratings.csv / movies.csv; choose an "
                                "empty or new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".ml-download-") as tmp:
        archive = fetch(url, Path(tmp) / "archive.zip", sha256, timeout)
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                target = (unpacked / member).resolve()
                if not target.is_relative_to(unpacked.resolve()):
                    raise PainvrlInputError(f"{url}: archive member {member!r} escapes the target folder")
            zf.extractall(unpacked)
        roots = [p.parent for p in unpacked.rglob("ratings.csv")]
        if len(roots) != 1:
            raise PainvrlInputError(f"{url}: expected exactly one ratings.csv in the archive, found {len(roots)}")
        if url == OFFICIAL_ZIP_URL:
            for name, expected in FILE_SHA256.items():
                if sha256_file(roots[0] / name) != expected:
                    raise PainvrlInputError(f"{url}: {name} does not match its known sha256")
        os.replace(roots[0], dest)
    return dest
