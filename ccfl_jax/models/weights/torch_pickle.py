"""A restricted reader of legacy torch `.pth` files: tensors to NumPy, torch not needed.

A pickle is a program: unpickling calls whatever callables the file names. `torch.load`
of an untrusted file can run anything; this reader runs nothing. It resolves only the
globals a saved state_dict needs, each to a harmless stand-in defined here:

  * `collections.OrderedDict` (the state_dict itself and its empty backward hooks);
  * `torch._utils._rebuild_tensor_v2` and `torch._utils._rebuild_tensor`: record
    (storage, offset, shape, stride), materialized once the storage bytes are read;
  * `torch.<Type>Storage` for the plain numeric types (`STORAGE_DTYPES`): a dtype tag.

Every other global (`os.system`, `builtins.eval`, `torch.nn.Module`, ...) raises
`ForbiddenGlobalError` naming the global and the file, before anything is called.

The legacy format (`torch.save` before 1.6, or `_use_new_zipfile_serialization=False`)
is five records back to back:

  1. a pickled magic number, 0x1950a86a20f9469cfc6c;
  2. a pickled protocol version, 1001;
  3. a pickled sys-info dict (`little_endian`, `type_sizes`);
  4. the object itself, pickled with persistent ids: each storage is replaced by
     ('storage', storage type, key, location, element count, view metadata);
  5. the pickled list of storage keys, then each storage's raw bytes in that order, each
     prefixed by its element count as an int64.

Tensors become `np.ndarray` copies built from (storage, offset, shape, stride), with the
strides and offset checked against the storage's length (a crafted file cannot read
outside it). Zip-format files (torch >= 1.6 default) are refused with a clear error.
"""
import dataclasses
import io
import os
import pickle
import struct
from typing import Any

import ml_dtypes
import numpy as np

MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
PROTOCOL_VERSION = 1001

STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


class TorchPickleError(ValueError):
  """The file is not a legacy torch pickle this reader can read."""


class ForbiddenGlobalError(TorchPickleError, pickle.UnpicklingError):
  """The file names a global outside the allowed storage and tensor-rebuild ones."""


@dataclasses.dataclass(frozen=True)
class StorageType:
  """Stand-in for a `torch.<Type>Storage` class: its name and element dtype."""
  name: str
  dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class StorageRef:
  """A storage named by a persistent id: root key, element offset and count in the root."""
  key: str
  dtype: np.dtype
  offset: int
  size: int


@dataclasses.dataclass(frozen=True)
class TensorRef:
  """A tensor before its storage bytes are read."""
  storage: StorageRef
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  """Stand-in for torch._utils._rebuild_tensor(_v2): records where the tensor lies.

  `unused` is (requires_grad, backward_hooks[, metadata]) for _v2; hooks must be empty.
  """
  if not isinstance(storage, StorageRef):
    raise TorchPickleError(f"tensor rebuilt from {type(storage).__name__}, not a storage")
  if len(unused) >= 2 and unused[1]:
    raise TorchPickleError("tensor with backward hooks")
  return TensorRef(storage, int(storage_offset), tuple(int(d) for d in size),
                   tuple(int(s) for s in stride))


def _allowed_globals() -> dict[tuple[str, str], Any]:
  import collections
  allowed = {("collections", "OrderedDict"): collections.OrderedDict,
             ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
             ("torch._utils", "_rebuild_tensor"): _rebuild_tensor}
  for name, dtype in STORAGE_DTYPES.items():
    allowed[("torch", name)] = StorageType(name, dtype)
  return allowed


ALLOWED_GLOBALS = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only ALLOWED_GLOBALS; collects the storages named by persistent ids."""

  def __init__(self, file, path: str, storages: dict[str, tuple[np.dtype, int]]):
    super().__init__(file)
    self._path = path
    self._storages = storages

  def find_class(self, module, name):
    if (module, name) not in ALLOWED_GLOBALS:
      raise ForbiddenGlobalError(
          f"{self._path}: refusing the pickle global {module}.{name}; a torch weights file "
          f"may only name {', '.join(sorted(f'{m}.{n}' for m, n in ALLOWED_GLOBALS))}")
    return ALLOWED_GLOBALS[(module, name)]

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
      raise TorchPickleError(f"{self._path}: unsupported persistent id {pid!r:.200}")
    _, storage_type, key, _location, size, view = pid
    if not isinstance(storage_type, StorageType):
      raise TorchPickleError(f"{self._path}: storage of type {storage_type!r:.100}")
    key, size = str(key), int(size)
    known = self._storages.setdefault(key, (storage_type.dtype, size))
    if known != (storage_type.dtype, size):
      raise TorchPickleError(f"{self._path}: storage {key} declared twice, differently")
    if view is None:
      return StorageRef(key, storage_type.dtype, 0, size)
    _view_key, view_offset, view_size = view
    return StorageRef(key, storage_type.dtype, int(view_offset), int(view_size))


def _load_record(file, path: str, storages: dict) -> Any:
  try:
    return _RestrictedUnpickler(file, path, storages).load()
  except TorchPickleError:
    raise
  except Exception as error:  # a truncated or corrupt pickle
    raise TorchPickleError(f"{path}: not a legacy torch pickle ({error})") from error


def _read_storages(file, path: str, keys: list, storages: dict,
                   little_endian: bool) -> dict[str, np.ndarray]:
  """Record 5's raw bytes: per key, an int64 element count and the elements."""
  order = "<" if little_endian else ">"
  arrays = {}
  for key in keys:
    if key not in storages:
      raise TorchPickleError(f"{path}: storage {key} has bytes but no tensor names it")
    dtype, size = storages[key]
    header = file.read(8)
    if len(header) != 8:
      raise TorchPickleError(f"{path}: truncated before storage {key}")
    (count,) = struct.unpack(order + "q", header)
    if count != size:
      raise TorchPickleError(f"{path}: storage {key} holds {count} elements, declared {size}")
    data = file.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
      raise TorchPickleError(f"{path}: truncated in storage {key}")
    arrays[key] = np.frombuffer(data, dtype.newbyteorder(order) if dtype.itemsize > 1 else dtype)
  missing = set(storages) - set(arrays)
  if missing:
    raise TorchPickleError(f"{path}: no bytes for storages {sorted(missing)[:5]}")
  return arrays


def _materialize(tensor: TensorRef, arrays: dict[str, np.ndarray], path: str) -> np.ndarray:
  """The tensor's elements, copied out of its storage with bounds checked."""
  ref = tensor.storage
  root = arrays[ref.key]
  if ref.offset < 0 or ref.size < 0 or ref.offset + ref.size > root.size:
    raise TorchPickleError(f"{path}: storage view outside storage {ref.key}")
  storage = root[ref.offset:ref.offset + ref.size]
  shape, stride = tensor.shape, tensor.stride
  if len(shape) != len(stride) or min(shape + stride + (tensor.offset,), default=0) < 0:
    raise TorchPickleError(f"{path}: bad tensor layout {shape} / {stride}")
  if 0 in shape:
    return np.zeros(shape, storage.dtype.newbyteorder("="))
  last = tensor.offset + sum((d - 1) * s for d, s in zip(shape, stride))
  if last >= storage.size:
    raise TorchPickleError(f"{path}: tensor {shape} / {stride} reads past its storage")
  view = np.lib.stride_tricks.as_strided(storage[tensor.offset:], shape,
                                         tuple(s * storage.itemsize for s in stride),
                                         writeable=False)
  # np.array, not np.ascontiguousarray: that one turns a 0-d tensor into shape (1,).
  return np.array(view, dtype=storage.dtype.newbyteorder("="), order="C")


def _resolve(obj, arrays, path):
  """`obj` with every TensorRef replaced by its array (dicts, lists and tuples walked)."""
  if isinstance(obj, TensorRef):
    return _materialize(obj, arrays, path)
  if isinstance(obj, dict):
    return {key: _resolve(value, arrays, path) for key, value in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_resolve(value, arrays, path) for value in obj)
  return obj


def load(path: str | os.PathLike) -> Any:
  """The object a legacy torch file holds, tensors as NumPy arrays (dicts become dicts)."""
  path = os.fspath(path)
  with open(path, "rb") as file:
    data = file.read()
  if data[:4] == b"PK\x03\x04":
    raise TorchPickleError(f"{path}: a zip-format torch file (torch >= 1.6 `torch.save`); "
                           "only the legacy format is read here")
  file = io.BytesIO(data)
  storages: dict[str, tuple[np.dtype, int]] = {}
  if _load_record(file, path, {}) != MAGIC_NUMBER:
    raise TorchPickleError(f"{path}: not a legacy torch file (bad magic number)")
  protocol = _load_record(file, path, {})
  if protocol != PROTOCOL_VERSION:
    raise TorchPickleError(f"{path}: torch protocol {protocol!r}, expected {PROTOCOL_VERSION}")
  sys_info = _load_record(file, path, {})
  if not isinstance(sys_info, dict):
    raise TorchPickleError(f"{path}: bad sys-info record")
  obj = _load_record(file, path, storages)
  keys = _load_record(file, path, {})
  if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
    raise TorchPickleError(f"{path}: bad storage key list")
  arrays = _read_storages(file, path, keys, storages, bool(sys_info.get("little_endian", True)))
  return _resolve(obj, arrays, path)


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A legacy torch state_dict file as {parameter name: array}, in the file's order."""
  state = load(path)
  if not (isinstance(state, dict) and
          all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.items())):
    raise TorchPickleError(f"{os.fspath(path)}: not a state_dict (name -> tensor)")
  return state
