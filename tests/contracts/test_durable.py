"""The one atomic file write of every CPython part (contracts.durable)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from contracts.durable import write_atomic, write_json_atomic


def test_a_state_file_is_replaced_whole_and_private(tmp_path: Path) -> None:
    target = tmp_path / "state" / "ota-jobs.json"
    write_json_atomic(target, {"v": 1})
    write_json_atomic(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 2}
    assert target.stat().st_mode & 0o777 == 0o600
    assert os.listdir(target.parent) == ["ota-jobs.json"]  # no temporary left behind


def test_a_write_that_fails_leaves_the_old_file(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "crl.pem"
    write_atomic(target, b"old", mode=0o644)

    def no_rename(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["crl.pem"]
