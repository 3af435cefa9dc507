"""RecFlowExampleGen: the input fingerprint (its cache key) and construction checks."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("tfx")

from tfcascade.components.recflow_example_gen import RecFlowExampleGen, folder_fingerprint  # noqa: E402


def test_fingerprint_changes_with_content_names_and_nothing_else(tmp_path):
    (tmp_path / "day1").mkdir()
    (tmp_path / "day1" / "a.feather").write_bytes(b"12345")
    first = folder_fingerprint(str(tmp_path))
    assert folder_fingerprint(str(tmp_path)) == first  # deterministic

    (tmp_path / "day1" / "a.feather").write_bytes(b"123456")  # size changes
    second = folder_fingerprint(str(tmp_path))
    assert second != first

    stat = os.stat(tmp_path / "day1" / "a.feather")
    os.utime(tmp_path / "day1" / "a.feather", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert folder_fingerprint(str(tmp_path)) != second  # rewritten in place, same size

    (tmp_path / "day1" / "a.feather").rename(tmp_path / "day1" / "b.feather")
    assert folder_fingerprint(str(tmp_path)) not in (first, second)


def test_fingerprint_of_missing_folder_names_it(tmp_path):
    with pytest.raises(ValueError, match="input_dir"):
        folder_fingerprint(str(tmp_path / "nope"))


@pytest.mark.parametrize("kwargs, match", [({"stages": 4}, "stages"), ({"eval_days": 0}, "eval_days")])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        RecFlowExampleGen(input_dir=str(tmp_path), **kwargs)


def test_fingerprint_is_an_execution_property(tmp_path):
    (tmp_path / "x").write_text("1")
    gen = RecFlowExampleGen(input_dir=str(tmp_path))
    assert gen.exec_properties["input_fingerprint"] == folder_fingerprint(str(tmp_path))
    assert gen.exec_properties["stages"] == 2
