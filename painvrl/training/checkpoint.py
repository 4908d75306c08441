"""Checkpoints as folders, loaded without unrestricted pickle.

A pipeline state is a nested dict of plain values (str, int, float, bool, None, lists, dicts), torch tensors
(model and optimiser state) and numpy arrays (mask, environment labels). It is written as:

- ``state.pt``: everything except numpy arrays, via ``torch.save`` and read back with
  ``torch.load(weights_only=True)``;
- ``arrays/<n>.npy``: each numpy array, read back with ``np.load(allow_pickle=False)``; the dict keeps a
  ``{"__npy__": "<n>"}`` marker where the array was.

The final model of a run is written with :func:`save_model` as ``model.pt`` (state_dict) plus ``meta.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from painvrl.errors import PainvrlInputError

STATE_FILE = "state.pt"
ARRAYS_DIR = "arrays"
MODEL_FILE = "model.pt"
META_FILE = "meta.json"
_NPY = "__npy__"


def _split_arrays(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        arrays.append(value)
        return {_NPY: str(len(arrays) - 1)}
    if isinstance(value, dict):
        return {k: _split_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_split_arrays(v, arrays) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _join_arrays(value: Any, folder: Path) -> Any:
    if isinstance(value, dict):
        if set(value) == {_NPY}:
            return np.load(folder / ARRAYS_DIR / f"{value[_NPY]}.npy", allow_pickle=False)
        return {k: _join_arrays(v, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_arrays(v, folder) for v in value]
    return value


def save_pipeline_state(state: dict[str, Any], folder: Path) -> None:
    """Write a nested state dict (tensors, numpy arrays, plain values) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays: list[np.ndarray] = []
    skeleton = _split_arrays(state, arrays)
    if arrays:
        (folder / ARRAYS_DIR).mkdir(exist_ok=True)
        for index, array in enumerate(arrays):
            if array.dtype == object:
                raise TypeError("checkpoint: object arrays cannot be stored without pickle")
            np.save(folder / ARRAYS_DIR / f"{index}.npy", array, allow_pickle=False)
    torch.save(skeleton, folder / STATE_FILE)


def load_pipeline_state(folder: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Inverse of :func:`save_pipeline_state` (safe loaders only)."""
    folder = Path(folder)
    file = folder / STATE_FILE
    if not file.is_file():
        raise PainvrlInputError(f"checkpoint {folder}: {STATE_FILE} not found")
    skeleton = torch.load(file, map_location=map_location, weights_only=True)
    state: dict[str, Any] = _join_arrays(skeleton, folder)
    return state


def save_checkpoint(folder: Path, *, model_state: dict[str, torch.Tensor], phase: str, round_index: int = 0,
                    mask: np.ndarray | None = None, env_state: dict[str, Any] | None = None,
                    optimizer_state: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
    """Model, optimiser and environment state, mask, phase and round in one folder."""
    save_pipeline_state({"phase": phase, "round": int(round_index), "model_state": model_state, "mask": mask,
                         "env_state": env_state, "optimizer_state": optimizer_state, "extra": extra or {}},
                        folder)


def load_checkpoint(folder: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Dict with keys phase, round, model_state, mask, env_state, optimizer_state, extra."""
    return load_pipeline_state(folder, map_location)


def save_model(folder: Path, model_state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Final model: ``model.pt`` (state_dict) and ``meta.json`` (what is needed to rebuild the module)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model_state.items()}, folder / MODEL_FILE)
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=float))


def load_model(folder: Path, map_location: str | torch.device = "cpu"
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Inverse of :func:`save_model`."""
    folder = Path(folder)
    for name in (MODEL_FILE, META_FILE):
        if not (folder / name).is_file():
            raise PainvrlInputError(f"run checkpoint {folder}: {name} not found")
    state = torch.load(folder / MODEL_FILE, map_location=map_location, weights_only=True)
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise PainvrlInputError(f"run checkpoint {folder / META_FILE}: not valid JSON ({exc})") from exc
    return state, meta
