"""Tests of the ``user item`` interaction-folder reader."""

from __future__ import annotations

import numpy as np
import pytest

from tfcascade.data.interactions import load_interactions, read_info, read_pairs


def write_folder(path, train="0 1\n1 2\n0 1\n", valid="1 0\n", test="0 2\n2 1\n",
                 info="train 3\nvalid 1\ntest 2\nusers 3\nitems 3\n--- 2024-01-01 ---\n"):
    path.mkdir(parents=True, exist_ok=True)
    (path / "info.txt").write_text(info)
    for name, text in (("train", train), ("valid", valid), ("test", test)):
        (path / f"{name}.txt").write_text(text)
    return path


def test_loads_splits_in_order_with_duplicates(tmp_path):
    data = load_interactions(write_folder(tmp_path / "d"))
    assert (data.num_users, data.num_items, data.name) == (3, 3, "d")
    np.testing.assert_array_equal(data.train, [[0, 1], [1, 2], [0, 1]])
    np.testing.assert_array_equal(data.valid, [[1, 0]])
    np.testing.assert_array_equal(data.test, [[0, 2], [2, 1]])
    assert data.train.dtype == np.int64
    by_user = data.items_by_user("train")
    assert [list(x) for x in by_user] == [[1], [2], []]


def test_malformed_line_names_file_and_line(tmp_path):
    folder = write_folder(tmp_path / "d", train="0 1\n1 x\n0 1\n")
    with pytest.raises(ValueError, match=r"train\.txt:2: expected 'user item'.*'1 x'"):
        load_interactions(folder)
    (folder / "train.txt").write_text("0 1\n1 2 3\n0 1\n")
    with pytest.raises(ValueError, match=r"train\.txt:2:"):
        load_interactions(folder)


def test_ids_out_of_range(tmp_path):
    folder = write_folder(tmp_path / "d", test="0 2\n2 3\n")
    with pytest.raises(ValueError, match=r"test\.txt:2: item id 3 out of range \[0, 3\)"):
        load_interactions(folder, strict=True)
    grown = load_interactions(folder)  # default: the id space grows, with a warning
    assert grown.num_items == 4 and grown.num_users == 3
    with pytest.raises(ValueError, match=r"user id -1 out of range"):
        read_pairs(write_folder(tmp_path / "n", train="-1 0\n").joinpath("train.txt"), 3, 3)


def test_bad_info_and_counts(tmp_path):
    with pytest.raises(FileNotFoundError, match="info file not found"):
        read_info(tmp_path / "nope.txt")
    folder = write_folder(tmp_path / "a", info="train 3\nitems 3\n")
    with pytest.raises(ValueError, match="missing the 'users N' line"):
        load_interactions(folder)
    folder = write_folder(tmp_path / "b", info="users 3\nitems 3\ntrain 5\n")
    with pytest.raises(ValueError, match="has 3 pairs but .* says train 5"):
        load_interactions(folder)
    folder = write_folder(tmp_path / "c", info="users three\n")
    with pytest.raises(ValueError, match=r"info\.txt:1: expected 'key count'"):
        load_interactions(folder)
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        load_interactions(tmp_path / "missing")
    (folder / "info.txt").write_text("users 3\nitems 3\n")
    (folder / "valid.txt").unlink()
    with pytest.raises(FileNotFoundError, match="valid.txt"):
        load_interactions(folder)


def test_real_datasets_match_info(real_data_dir):
    root = real_data_dir / "topkgat"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    expected = {"Ali-Display": (17730, 10036, 121178, 5296), "Food": (14382, 31288, 319848, 0)}
    for name, (users, items, train, duplicates) in expected.items():
        data = load_interactions(root / name, strict=True)
        assert (data.num_users, data.num_items, len(data.train)) == (users, items, train)
        assert len(data.train) - len(np.unique(data.train, axis=0)) == duplicates
    # Epinions' info.txt undercounts by one user and one item.
    with pytest.raises(ValueError, match=r"Epinions/\w+\.txt:\d+: user id 17893 out of range"):
        load_interactions(root / "Epinions", strict=True)
    assert load_interactions(root / "Epinions").num_users == 17894
