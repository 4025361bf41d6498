"""PyTorch ``.bin`` checkpoints read into numpy without PyTorch, and without running anything they contain.

Why it exists: some encoders on the registry ship only ``pytorch_model.bin`` (no safetensors), and this project
never installs PyTorch. Since PyTorch 1.6 such a file is a zip of ``data.pkl`` (a pickle of the state dict
whose tensors point at storages by key) and ``data/<key>`` (each storage's raw little-endian bytes). A pickle can
run arbitrary code, so the unpickler here knows exactly the handful of names a state dict uses
(``torch._utils._rebuild_tensor_v2``, the typed storages, ``collections.OrderedDict``) and refuses every other
class, naming it.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from towers.config import ConfigError

STORAGE_DTYPES = {"FloatStorage": np.float32, "HalfStorage": np.float16, "DoubleStorage": np.float64,
                  "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                  "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class TorchFileError(ConfigError):
    """A file that is not a plain PyTorch state dict; the message names the file and what was refused."""


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_ignored) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2`` for numpy: a strided view of the storage, copied out."""
    if not size:
        return storage[offset].copy()
    itemsize = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))
    return np.array(view)


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, handle, archive: zipfile.ZipFile, prefix: str, where: str):
        super().__init__(handle)
        self.archive, self.prefix, self.where = archive, prefix, where

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        raise TorchFileError(f"{self.where}: refuses to load '{module}.{name}' (only plain tensors are read)")

    def persistent_load(self, pid):
        kind, dtype, key, _location, _numel = pid
        if kind != "storage" or not isinstance(dtype, type):
            raise TorchFileError(f"{self.where}: unexpected persistent id {pid!r}")
        return np.frombuffer(self.archive.read(f"{self.prefix}data/{key}"), dtype=np.dtype(dtype).newbyteorder("<"))


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """{parameter name: numpy array} from a PyTorch zip checkpoint."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise TorchFileError(f"{path}: not a PyTorch zip checkpoint ({err})") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise TorchFileError(f"{path}: expected one */data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0][:-len("data.pkl")]
        state = _StateDictUnpickler(io.BytesIO(archive.read(pickles[0])), archive, prefix, str(path)).load()
    if not isinstance(state, dict):
        raise TorchFileError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {str(k): np.asarray(v) for k, v in state.items()}
