import numpy as np
import pytest

from ctspine.atomic import atomic_write, write_text


def test_atomic_write_bytes_replaces_the_file(tmp_path):
    target = tmp_path / "meta.json"
    target.write_bytes(b"old")
    assert atomic_write(target, b"new") == target
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]


def test_atomic_write_with_a_writer(tmp_path):
    target = tmp_path / "tile.npy"
    atomic_write(target, lambda handle: np.save(handle, np.arange(6), allow_pickle=False))
    assert np.array_equal(np.load(target), np.arange(6))


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "labels.bin"
    target.write_bytes(b"old")

    def fail(handle):
        handle.write(b"half")
        raise ValueError("checksum mismatch")

    with pytest.raises(ValueError, match="checksum mismatch"):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.bin"]


def test_write_text_creates_the_folder_and_writes_utf8(tmp_path):
    target = tmp_path / "run" / "table2.csv"
    assert write_text(target, "vertebra,dice\nL6 – lumbarization,0.0\n") == target
    assert target.read_bytes() == "vertebra,dice\nL6 – lumbarization,0.0\n".encode()
    assert [p.name for p in target.parent.iterdir()] == ["table2.csv"]
