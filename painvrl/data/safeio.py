"""Reading arrays from user files without executing code they may contain.

* ``load_npy``: plain ``.npy`` arrays, ``allow_pickle=False``.
* ``load_object_array_npy``: ``.npy`` files holding *object* arrays (MMGCN's ``val_full.npy``,
  ``test_full.npy``, ``user_item_dict.npy`` are ``np.save`` of Python lists / dicts, i.e. pickles). numpy can
  only read those with unrestricted pickle, which runs any code the file names. We parse the ``.npy`` header
  ourselves and unpickle the payload with :class:`RestrictedUnpickler`, whose ``find_class`` resolves only
  numpy's array/scalar reconstruction and a few inert builtin containers; anything else is refused before it
  is called.
* ``load_torch_tensor``: ``.pt`` files through ``torch.load(weights_only=True)`` (numpy arrays inside are
  admitted through torch's own allow-list with the same numpy reconstruction functions).

Every failure raises :class:`~painvrl.errors.PainvrlInputError` naming the file.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from painvrl.errors import PainvrlInputError

# Resolved from live objects, so the same code works on numpy 1.x (numpy.core) and 2.x (numpy._core).
_RECONSTRUCT: Callable[..., Any] = np.zeros(1).__reduce__()[0]  # type: ignore[assignment]
_SCALAR: Callable[..., Any] = np.int64(0).__reduce__()[0]  # type: ignore[assignment]
_NUMPY_CORE_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_BUILTIN_MODULES = ("builtins", "__builtin__")
_SAFE_BUILTINS = ("set", "frozenset", "list", "dict", "tuple", "int", "float", "complex", "bool", "str",
                  "bytes", "bytearray")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``: protocol-2 pickles store ``bytes`` as ``encode(str, 'latin1')``."""
    if codecs.lookup(encoding).name not in ("latin-1", "iso8859-1", "utf-8"):
        raise RefusedGlobal(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, encoding)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "defaultdict"): collections.defaultdict,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): _latin1_encode,
    }
    for module in _NUMPY_CORE_MODULES:
        allowed[(module, "_reconstruct")] = _RECONSTRUCT
        allowed[(module, "scalar")] = _SCALAR
    for module in _BUILTIN_MODULES:
        for name in _SAFE_BUILTINS:
            allowed[(module, name)] = getattr(builtins, name)
    return allowed


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves numpy array reconstruction and inert builtin containers.

    Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, arbitrary classes) raises
    ``pickle.UnpicklingError`` when the pickle *names* it, so it is never called.
    """

    _ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"global '{module}.{name}' is not allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedGlobal("persistent ids are not allowed")


def _require_file(path: Path) -> None:
    if not path.exists():
        raise PainvrlInputError(f"{path}: file not found")
    if not path.is_file():
        raise PainvrlInputError(f"{path}: is not a regular file")


def _check_array(array: np.ndarray, path: Path, expect_dtype_kind: str | None,
                 expect_ndim: int | None) -> np.ndarray:
    if expect_ndim is not None and array.ndim != expect_ndim:
        raise PainvrlInputError(f"{path}: expected a {expect_ndim}-D array, got shape {array.shape}")
    if expect_dtype_kind is not None and array.dtype.kind not in expect_dtype_kind:
        raise PainvrlInputError(f"{path}: expected dtype kind in {sorted(expect_dtype_kind)} "
                                f"(b bool, i/u integer, f float), got dtype {array.dtype}")
    return array


def load_npy(path: Path | str, expect_dtype_kind: str | None = None,
             expect_ndim: int | None = None) -> np.ndarray:
    """Load a plain ``.npy`` array (never unpickles).

    ``expect_dtype_kind``: allowed ``dtype.kind`` characters (e.g. ``"iu"`` for integers, ``"iuf"`` for
    numbers); ``expect_ndim``: required number of dimensions. A violation raises ``PainvrlInputError``.
    """
    path = Path(path)
    _require_file(path)
    with path.open("rb") as handle:
        if handle.read(len(npy_format.MAGIC_PREFIX)) != npy_format.MAGIC_PREFIX:
            raise PainvrlInputError(f"{path}: not a .npy file (no numpy magic header)")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "Object arrays" in str(err):
            raise PainvrlInputError(f"{path}: holds a Python object array (pickled data); a numeric array "
                                    "was expected") from None
        raise PainvrlInputError(f"{path}: not a readable .npy array ({err})") from None
    except (OSError, EOFError) as err:
        raise PainvrlInputError(f"{path}: not a readable .npy array ({err})") from None
    if not isinstance(array, np.ndarray):  # np.load gives an NpzFile for .npz archives
        raise PainvrlInputError(f"{path}: expected a .npy array, got a {type(array).__name__}")
    return _check_array(array, path, expect_dtype_kind, expect_ndim)


def _read_header(handle: io.BufferedReader, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = npy_format.read_magic(handle)
        if version == (1, 0):
            return npy_format.read_array_header_1_0(handle)
        if version == (2, 0):
            return npy_format.read_array_header_2_0(handle)
        # 3.0 only differs by a utf-8 header; numpy keeps its reader private.
        read_any = getattr(npy_format, "_read_array_header", None)
        if read_any is None:
            raise ValueError(f"unsupported .npy format version {version}")
        return read_any(handle, version)
    except (ValueError, OSError, EOFError) as err:
        raise PainvrlInputError(f"{path}: not a valid .npy file ({err})") from None


def _unpickle(unpickler: RestrictedUnpickler, path: Path, accepted: str, corrupt: str) -> Any:
    """``unpickler.load()``; a refused global or a malformed payload becomes a PainvrlInputError naming
    ``path`` (``accepted``: what the file may hold, ``corrupt``: what a malformed payload is called)."""
    try:
        return unpickler.load()
    except RefusedGlobal as err:
        raise PainvrlInputError(f"{path}: refused to unpickle: {err}. Only {accepted} accepted") from None
    except Exception as err:  # malformed payloads raise anything from EOFError to TypeError
        raise PainvrlInputError(f"{path}: {corrupt} ({type(err).__name__}: {err})") from None


def load_object_array_npy(path: Path | str) -> np.ndarray:
    """Load a ``.npy`` that may hold a pickled object array, without unrestricted pickle.

    Numeric files are read with ``load_npy``. Object arrays are unpickled by :class:`RestrictedUnpickler`
    (numpy arrays and scalars, lists, tuples, dicts, sets, numbers, strings); anything else in the pickle is
    refused with a ``PainvrlInputError`` naming the file and the refused global, before it can run.
    A 0-d result (``np.save`` of a dict) is returned as is: call ``.item()`` on it.
    """
    path = Path(path)
    _require_file(path)
    with path.open("rb") as handle:
        shape, _fortran, dtype = _read_header(handle, path)
        if not dtype.hasobject:
            return load_npy(path)
        loaded = _unpickle(RestrictedUnpickler(handle, encoding="latin1"), path,
                           "numpy arrays of numbers, lists, tuples, dicts and sets are", "corrupt object array")
    if not isinstance(loaded, np.ndarray):
        raise PainvrlInputError(f"{path}: payload is a {type(loaded).__name__}, not a numpy array")
    if loaded.shape != tuple(shape):
        raise PainvrlInputError(f"{path}: payload shape {loaded.shape} does not match header shape {shape}")
    return loaded


def _numpy_safe_globals() -> list[Any]:
    return [_RECONSTRUCT, np.ndarray, np.dtype, _SCALAR, *[
        getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]]


def load_torch_tensor(path: Path | str) -> Any:
    """Load a tensor saved with ``torch.save`` using ``weights_only=True``; numpy arrays become tensors.

    Returns a ``torch.Tensor``. Anything else in the file (modules, dicts, arbitrary objects) is refused.
    """
    import torch

    path = Path(path)
    _require_file(path)
    try:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as first:
            if "numpy" not in str(first):
                raise
            # numpy arrays pickled inside the .pt: allow exactly numpy's array reconstruction.
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()
        detail = next((line for line in first_line if "Unsupported" in line), first_line[0] if first_line
                      else "")
        raise PainvrlInputError(f"{path}: refused by the weights-only loader: {detail.strip()}") from None
    except Exception as err:
        raise PainvrlInputError(f"{path}: not a readable torch file ({type(err).__name__}: {err})") from None
    if isinstance(loaded, np.ndarray):
        if loaded.dtype.hasobject:
            raise PainvrlInputError(f"{path}: holds an object array; a numeric tensor was expected")
        loaded = torch.from_numpy(np.ascontiguousarray(loaded))
    if not isinstance(loaded, torch.Tensor):
        raise PainvrlInputError(f"{path}: expected a tensor, got a {type(loaded).__name__}")
    return loaded


def as_feature_matrix(array: Any, path: Path | str) -> np.ndarray:
    """Validate an item-feature array read from ``path``: 2-D, numeric, finite; returns float32 [rows, d].

    Errors name the file, so a NaN is traced to where it came from rather than to a modality name.
    """
    path = Path(path)
    matrix = np.asarray(array)
    if matrix.ndim != 2:
        raise PainvrlInputError(f"{path}: item features must be a 2-D [n_items, d] array, got shape "
                                f"{matrix.shape}")
    if matrix.dtype.kind not in "biuf":
        raise PainvrlInputError(f"{path}: item features must be numeric, got dtype {matrix.dtype}")
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise PainvrlInputError(f"{path}: item features are empty (shape {matrix.shape})")
    with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 become inf, reported below
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    finite = np.isfinite(matrix)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise PainvrlInputError(f"{path}: item features contain NaN/inf in {len(bad_rows)} rows (first: row "
                                f"{int(bad_rows[0])})")
    return matrix


# ------------------------------------------------------------------------------ pickled scipy COO matrices

COO_CLASSES = (("scipy.sparse.coo", "coo_matrix"), ("scipy.sparse._coo", "coo_matrix"),
               ("scipy.sparse._coo", "coo_array"), ("scipy.sparse", "coo_matrix"), ("scipy.sparse", "coo_array"))
"""Where scipy versions pickle their COO classes from."""


class PickledCOO:
    """Stand-in for scipy's COO classes while unpickling: keeps the pickled attribute dict and builds nothing
    from it (no scipy code runs on the file's contents)."""

    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class SparseUnpickler(RestrictedUnpickler):
    """:class:`RestrictedUnpickler` that also resolves scipy's COO classes, to :class:`PickledCOO`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in COO_CLASSES:
            return PickledCOO
        return super().find_class(module, name)


def _coo_triplets(state: Any, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    if not isinstance(state, dict):
        raise PainvrlInputError(f"{path}: the pickled COO matrix has no attribute dict")
    shape = state.get("_shape", state.get("shape"))
    coords = state.get("coords", (state.get("row"), state.get("col")))  # scipy >= 1.13 pickles coords
    data = state.get("data")
    if not (isinstance(shape, tuple) and len(shape) == 2 and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise PainvrlInputError(f"{path}: the pickled COO matrix has no valid 2-D shape ({shape!r})")
    if not (isinstance(coords, tuple) and len(coords) == 2):
        raise PainvrlInputError(f"{path}: the pickled COO matrix has no row/col index arrays")
    row, col = coords
    if not (isinstance(row, np.ndarray) and isinstance(col, np.ndarray) and isinstance(data, np.ndarray)
            and row.ndim == col.ndim == data.ndim == 1 and len(row) == len(col) == len(data)):
        raise PainvrlInputError(f"{path}: the COO row, col and data arrays must be 1-D and of equal length")
    if row.dtype.kind not in "iu" or col.dtype.kind not in "iu" or data.dtype.kind not in "biuf":
        raise PainvrlInputError(f"{path}: COO indices must be integers and values numbers (got {row.dtype}, "
                                f"{col.dtype}, {data.dtype})")
    if len(row) and (row.min() < 0 or col.min() < 0 or row.max() >= shape[0] or col.max() >= shape[1]):
        raise PainvrlInputError(f"{path}: COO indices outside the matrix shape {shape}")
    return row.astype(np.int64), col.astype(np.int64), data, (int(shape[0]), int(shape[1]))


def load_coo_pickle(path: Path | str) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """``(row, col, data, shape)`` of a pickled ``scipy.sparse`` COO matrix (as MMSSL / DiffMM ship their
    interaction matrices), read with :class:`SparseUnpickler`: any global other than the COO class, numpy's
    array reconstruction and inert builtins is refused before it can run. Errors name the file."""
    path = Path(path)
    _require_file(path)
    with path.open("rb") as handle:
        loaded = _unpickle(SparseUnpickler(handle, encoding="latin1"), path, "a scipy COO matrix of numbers is",
                           "not a readable pickled matrix")
    if not isinstance(loaded, PickledCOO):
        raise PainvrlInputError(f"{path}: expected a pickled scipy COO matrix, got a {type(loaded).__name__}")
    return _coo_triplets(loaded.state, path)
