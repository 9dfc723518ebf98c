"""The pieces of `nimctl.resume` that need no hub: names in the staging place, the last move.

The transfers themselves (a killed run continued, another version discarded, a Range answered
with 200, two runs on one cache) run against the fake hub in tests/e2e/test_download.py.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from nimctl import resume


def test_a_file_in_a_folder_waits_under_one_flat_name(tmp_path):
    partial = resume.partial_path(tmp_path, "original/model-00001-of-00002.safetensors")
    assert partial.parent == tmp_path
    assert partial.name == "original%2Fmodel-00001-of-00002.safetensors.part"


def test_only_the_partials_of_the_files_asked_for_count_as_bytes_done(tmp_path):
    resume.partial_path(tmp_path, "a.safetensors").write_bytes(b"x" * 10)
    resume.partial_path(tmp_path, "other.safetensors").write_bytes(b"x" * 5)  # another profile's
    (tmp_path / "a.safetensors.json").write_text("{}")
    (tmp_path / "a.safetensors.lock").write_bytes(b"")
    assert resume.partial_bytes(tmp_path, ["a.safetensors", "b.safetensors"]) == 10
    assert resume.partial_bytes(tmp_path / "absent", ["a.safetensors"]) == 0


def test_a_staging_place_on_another_filesystem_is_copied_beside_the_blob_first(
    tmp_path, monkeypatch
):
    partial, blob = tmp_path / "a.part", tmp_path / "blobs" / "etag"
    partial.write_bytes(b"weights")
    replace = os.replace
    calls: list[tuple[Path, Path]] = []

    def across_devices(src: Path, dst: Path) -> None:
        calls.append((Path(src), Path(dst)))
        if len(calls) == 1:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        replace(src, dst)

    monkeypatch.setattr(resume.os, "replace", across_devices)
    resume._move(partial, blob)

    assert blob.read_bytes() == b"weights"
    assert not partial.exists()
    assert calls[1] == (blob.with_name(f".etag.{os.getpid()}.tmp"), blob)  # whole, in one step
    assert sorted(p.name for p in blob.parent.iterdir()) == ["etag"]


def test_other_failures_to_move_are_not_hidden(tmp_path):
    with pytest.raises(FileNotFoundError):
        resume._move(tmp_path / "absent.part", tmp_path / "blobs" / "etag")
