"""Image sources: digits, arrays, and the CIFAR-10 reader with its allow-listed unpickler."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from causalvl.datasets import ArraySource, cifar10, digits, safe_unpickle_cifar
from causalvl.errors import DataError


def _shared_cifar() -> Path | None:
    env = os.environ.get("CAUSALVL_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    folder = base / "cifar-10-batches-py"
    return folder if (folder / "test_batch").is_file() else None


SHARED_CIFAR = _shared_cifar()
needs_cifar = pytest.mark.skipif(SHARED_CIFAR is None, reason="shared CIFAR-10 copy not found")


class _Py2StylePickler(pickle._Pickler):
    """Writes bytes as protocol-2 BINSTRING, the way Python 2 wrote the official batches."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_bytes(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + len(obj).to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_bytes


def _py2_style_dumps(obj: object) -> bytes:
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _write_batch(path: Path, n: int = 20, seed: int = 0, py2: bool = False) -> None:
    rng = np.random.default_rng(seed)
    batch = {
        b"batch_label": b"fake",
        b"labels": [i % 10 for i in range(n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    path.write_bytes(_py2_style_dumps(batch) if py2 else pickle.dumps(batch, protocol=4))


def _write_layout(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    _write_batch(folder / "data_batch_1", seed=1)
    _write_batch(folder / "test_batch", seed=2)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=4))
    return folder


def test_digits_real_and_shaped():
    src = digits()
    assert src.images.shape == (1797, 1, 8, 8) and src.images.dtype == torch.uint8
    assert src.labels.shape == (1797,) and src.class_names == [str(i) for i in range(10)]
    from sklearn.datasets import load_digits

    ref = load_digits()
    assert np.array_equal(src.labels.numpy(), ref.target)
    np.testing.assert_allclose(src.float_images()[:, 0].numpy() * 16, ref.images, atol=0.04)
    f = src.float_images()
    assert f.dtype == torch.float32 and f.min() >= 0 and f.max() <= 1


def test_array_source_validates():
    src = ArraySource(np.zeros((4, 3, 5, 5), np.uint8), [0, 1, 1, 0], ["a", "b"])
    assert src.image_shape == (3, 5, 5) and src.num_classes == 2
    with pytest.raises(DataError, match="channels"):
        ArraySource(np.zeros((4, 5, 5, 3), np.uint8), [0, 1, 1, 0], ["a", "b"])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        ArraySource(torch.full((2, 1, 4, 4), 3.0), [0, 1], ["a", "b"])
    with pytest.raises(DataError, match="labels must lie"):
        ArraySource(torch.zeros(2, 1, 4, 4), [0, 2], ["a", "b"])
    with pytest.raises(DataError, match="shape"):
        ArraySource(torch.zeros(2, 1, 4, 4), [0, 1, 1], ["a", "b"])
    with pytest.raises(DataError, match="duplicates"):
        ArraySource(torch.zeros(2, 1, 4, 4), [0, 1], ["a", "a"])


def test_cifar_reader_on_written_layout(tmp_path):
    folder = _write_layout(tmp_path)
    train = cifar10(tmp_path, "train")  # parent folder works too
    test = cifar10(folder, "test")
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.class_names[0] == "airplane" and len(test) == 20
    raw = pickle.loads((folder / "test_batch").read_bytes())
    assert np.array_equal(test.images.reshape(20, -1).numpy(), raw[b"data"])
    small = cifar10(folder, "train", limit_per_class=1)
    assert len(small) == 10


def test_cifar_reader_accepts_numpy1_global_names(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    _write_batch(folder / "test_batch", py2=True)
    data = (folder / "test_batch").read_bytes()
    assert b"cnumpy._core.multiarray\n_reconstruct\n" in data and b"_codecs" not in data
    (folder / "test_batch").write_bytes(
        data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    )
    ref = pickle.loads(data, encoding="bytes")
    src = cifar10(folder, "test")
    assert src.images.shape == (20, 3, 32, 32)
    assert np.array_equal(src.images.reshape(20, -1).numpy(), ref[b"data"])


def test_cifar_reader_refuses_other_globals(tmp_path):
    folder = _write_layout(tmp_path)
    marker = tmp_path / "pwned"
    evil = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    (folder / "test_batch").write_bytes(evil)
    with pytest.raises(DataError, match=r"os\.system"):
        cifar10(folder, "test")
    assert not marker.exists()
    # a global hidden inside an otherwise valid batch dict
    batch = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": print}
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=4))
    with pytest.raises(DataError, match="builtins.print"):
        cifar10(folder, "train")
    # globals inside an object array are checked as well
    (folder / "data_batch_1").write_bytes(pickle.dumps(np.array([print], dtype=object)))
    with pytest.raises(DataError, match="builtins.print"):
        safe_unpickle_cifar(folder / "data_batch_1")


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_reader_accepts_python3_protocol_2_and_5(tmp_path, protocol):
    folder = tmp_path / "c"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batch = {
        b"labels": [i % 10 for i in range(20)],
        b"data": rng.integers(0, 256, size=(20, 3072), dtype=np.uint8),
    }
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))
    src = cifar10(folder, "test")
    assert np.array_equal(src.images.reshape(20, -1).numpy(), batch[b"data"])
    assert src.labels.tolist() == batch[b"labels"]


def test_cifar_reader_admits_codecs_encode_for_latin1_only(tmp_path):
    path = tmp_path / "test_batch"
    # _codecs.encode asked for another codec (zlib, base64 ... decompress attacker data)
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R.")
    with pytest.raises(DataError, match="could not be read.*latin1"):
        safe_unpickle_cifar(path)


@pytest.mark.parametrize(
    "labels", [["a"] * 2, [10**30, 1], [[1, 2], [3]], {1: 2}, [None, 1]], ids=str
)
def test_cifar_reader_malformed_labels_are_data_errors(tmp_path, labels):
    folder = tmp_path / "c"
    folder.mkdir()
    batch = {b"labels": labels, b"data": np.zeros((2, 3072), np.uint8)}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=4))
    with pytest.raises(DataError, match="b'labels' must be 2 ints in 0-9"):
        cifar10(folder, "test")


def test_cifar_reader_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder.*cifar-10-batches-py"):
        cifar10(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="data_batch_1"):
        cifar10(tmp_path / "empty", "train")
    with pytest.raises(DataError, match="test_batch"):
        cifar10(tmp_path / "empty", "test")
    (tmp_path / "empty" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="could not be read"):
        cifar10(tmp_path / "empty", "test")
    (tmp_path / "empty" / "test_batch").write_bytes(pickle.dumps({b"labels": [1]}))
    with pytest.raises(DataError, match="data"):
        cifar10(tmp_path / "empty", "test")
    with pytest.raises(DataError, match="split"):
        cifar10(tmp_path / "empty", "val")


@needs_cifar
def test_shared_cifar_copy():
    train = cifar10(SHARED_CIFAR, "train")
    test = cifar10(SHARED_CIFAR, "test")
    for src in (train, test):
        assert src.images.shape == (10000, 3, 32, 32) and src.images.dtype == torch.uint8
        assert src.labels.bincount(minlength=10).tolist() == [1000] * 10
    assert test.class_names == ["airplane", "automobile", "bird", "cat", "deer"] + [
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    assert 0.2 < train.float_images(slice(0, 100)).mean() < 0.8
