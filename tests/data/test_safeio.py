from __future__ import annotations

import os
import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib import format as npy_format

from painvrl.data.safeio import (
    RestrictedUnpickler,
    as_feature_matrix,
    load_npy,
    load_object_array_npy,
    load_torch_tensor,
)
from painvrl.errors import PainvrlInputError


class MakesDirectory:
    """A pickle payload that runs os.mkdir when unpickled without restrictions."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.target),)


def _object_array(*values: object) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        array[index] = value
    return array


def _save_object_npy(path: Path, array: np.ndarray, protocol: int) -> None:
    """np.save with a chosen pickle protocol (old files, e.g. MMGCN's, use protocol 2)."""
    with path.open("wb") as handle:
        npy_format.write_array_header_1_0(handle, npy_format.header_data_from_array_1_0(array))
        pickle.dump(array, handle, protocol=protocol)


# ------------------------------------------------------------------------------------------------ load_npy
def test_load_npy_roundtrip_and_expectations(tmp_path: Path) -> None:
    path = tmp_path / "a.npy"
    np.save(path, np.arange(6, dtype=np.int64).reshape(3, 2))
    assert load_npy(path, expect_dtype_kind="iu", expect_ndim=2).tolist() == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(PainvrlInputError, match=r"a\.npy: expected a 1-D array, got shape \(3, 2\)"):
        load_npy(path, expect_ndim=1)
    with pytest.raises(PainvrlInputError, match=r"a\.npy: expected dtype kind .*got dtype int64"):
        load_npy(path, expect_dtype_kind="f")


def test_load_npy_missing_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(PainvrlInputError, match=r"nothere\.npy: file not found"):
        load_npy(tmp_path / "nothere.npy")
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"this is not numpy")
    with pytest.raises(PainvrlInputError, match=r"garbage\.npy: not a \.npy file"):
        load_npy(garbage)


def test_load_npy_refuses_object_arrays(tmp_path: Path) -> None:
    path = tmp_path / "objects.npy"
    np.save(path, _object_array([1, 2], [3]), allow_pickle=True)
    with pytest.raises(PainvrlInputError, match=r"objects\.npy: holds a Python object array"):
        load_npy(path)


# ---------------------------------------------------------------------------------- load_object_array_npy
@pytest.mark.parametrize("protocol", [2, 4])
def test_object_array_of_ragged_rows(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "val_full.npy"
    _save_object_npy(path, _object_array([0, 5, 6], np.array([1, 7], dtype=np.int64)), protocol)
    rows = load_object_array_npy(path)
    assert rows.dtype == object and rows.shape == (2,)
    assert list(rows[0]) == [0, 5, 6] and list(rows[1]) == [1, 7]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_object_array_dict_of_sets_any_protocol(tmp_path: Path, protocol: int) -> None:
    mapping: defaultdict[np.int64, set[np.int64]] = defaultdict(set)
    mapping[np.int64(3)].update({np.int64(10), np.int64(11)})
    path = tmp_path / "user_item_dict.npy"
    _save_object_npy(path, np.array({"plain": {1, 2}, "numpy": mapping, "bytes": b"\x00\xff", "f": 1.5},
                                    dtype=object), protocol)
    loaded = load_object_array_npy(path).item()
    assert loaded["plain"] == {1, 2}
    assert loaded["numpy"] == {3: {10, 11}}
    assert loaded["bytes"] == b"\x00\xff" and loaded["f"] == 1.5


def test_object_loader_passes_numeric_files_through(tmp_path: Path) -> None:
    path = tmp_path / "rows.npy"
    np.save(path, np.array([[0, 5], [1, 6]]))
    assert load_object_array_npy(path).tolist() == [[0, 5], [1, 6]]


def test_malicious_pickle_is_rejected_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "test_full.npy"
    np.save(path, _object_array([0, 5], MakesDirectory(marker)), allow_pickle=True)
    # The file really is malicious: numpy's unrestricted loader runs the payload.
    np.load(path, allow_pickle=True)
    assert marker.exists()
    marker.rmdir()

    with pytest.raises(PainvrlInputError, match=r"test_full\.npy: refused to unpickle: global '(posix|os|nt)"
                                                 r"\.mkdir' is not allowed"):
        load_object_array_npy(path)
    assert not marker.exists()


def test_restricted_unpickler_refuses_eval_and_arbitrary_classes() -> None:
    import io

    for payload in (pickle.dumps(eval), pickle.dumps(Path("x")), pickle.dumps(MakesDirectory)):
        with pytest.raises(pickle.UnpicklingError, match="is not allowed"):
            RestrictedUnpickler(io.BytesIO(payload)).load()


def test_codecs_encode_only_for_text_encodings() -> None:
    import io

    assert RestrictedUnpickler(io.BytesIO(b"c_codecs\nencode\n(Vab\nVlatin1\ntR.")).load() == b"ab"
    with pytest.raises(pickle.UnpicklingError, match=r"refusing _codecs\.encode with encoding 'rot13'"):
        RestrictedUnpickler(io.BytesIO(b"c_codecs\nencode\n(Vab\nVrot13\ntR.")).load()


def test_object_array_corrupt_payload(tmp_path: Path) -> None:
    path = tmp_path / "cut.npy"
    np.save(path, _object_array([0, 1, 2], [3, 4]), allow_pickle=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(PainvrlInputError, match=r"cut\.npy: corrupt object array"):
        load_object_array_npy(path)


def test_object_array_bad_header(tmp_path: Path) -> None:
    path = tmp_path / "bad.npy"
    path.write_bytes(b"\x93NUMPY\x07\x00junk")
    with pytest.raises(PainvrlInputError, match=r"bad\.npy: not a valid \.npy file"):
        load_object_array_npy(path)


# ------------------------------------------------------------------------------------------ load_torch_tensor
def test_load_torch_tensor_and_numpy_payload(tmp_path: Path) -> None:
    tensor_path, numpy_path = tmp_path / "feat_v.pt", tmp_path / "feat_a.pt"
    torch.save(torch.arange(6.0).reshape(3, 2), tensor_path)
    torch.save(np.arange(6, dtype=np.float32).reshape(2, 3), numpy_path)
    assert load_torch_tensor(tensor_path).shape == (3, 2)
    loaded = load_torch_tensor(numpy_path)
    assert isinstance(loaded, torch.Tensor) and loaded.shape == (2, 3)


def test_load_torch_tensor_refuses_code_and_non_tensors(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "feat_t.pt"
    torch.save(MakesDirectory(marker), evil)
    with pytest.raises(PainvrlInputError, match=r"feat_t\.pt: refused by the weights-only loader"):
        load_torch_tensor(evil)
    assert not marker.exists()
    not_tensor = tmp_path / "dict.pt"
    torch.save({"a": torch.zeros(2)}, not_tensor)
    with pytest.raises(PainvrlInputError, match=r"dict\.pt: expected a tensor, got a dict"):
        load_torch_tensor(not_tensor)
    with pytest.raises(PainvrlInputError, match=r"missing\.pt: file not found"):
        load_torch_tensor(tmp_path / "missing.pt")


# ---------------------------------------------------------------------------------------- as_feature_matrix
def test_feature_matrix_checks_name_the_file() -> None:
    good = as_feature_matrix(np.ones((3, 2), dtype=np.float64), "image_feat.npy")
    assert good.dtype == np.float32 and good.flags.c_contiguous
    bad = np.ones((4, 2))
    bad[2, 1] = np.nan
    with pytest.raises(PainvrlInputError, match=r"image_feat\.npy: item features contain NaN/inf in 1 rows "
                                                r"\(first: row 2\)"):
        as_feature_matrix(bad, "image_feat.npy")
    with pytest.raises(PainvrlInputError, match=r"text_feat\.npy: item features must be a 2-D"):
        as_feature_matrix(np.ones(3), "text_feat.npy")
    with pytest.raises(PainvrlInputError, match=r"x\.npy: item features contain NaN/inf"):
        as_feature_matrix(np.full((2, 2), 1e300), "x.npy")  # overflows float32
