"""Secrets are owner-only from their first byte: no chmod afterwards, no moment readable by others."""

import os
from pathlib import Path

import pytest

from commands.identity_standin import ensure_identity_key
from healthbook.config import Settings
from healthbook.secret_files import write_owner_only


@pytest.fixture
def open_umask():
    previous = os.umask(0)  # the most permissive a caller could run with
    yield
    os.umask(previous)


@pytest.fixture
def no_chmod_after(monkeypatch):
    """A file made readable first and narrowed afterwards would stay readable here."""
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)
    monkeypatch.setattr(os, "chmod", lambda path, mode, **kwargs: None)


def test_a_secret_is_created_owner_only_and_an_old_readable_file_is_narrowed(tmp_path, open_umask, no_chmod_after):
    fresh = tmp_path / "fresh.key"
    write_owner_only(fresh, b"secret")
    assert fresh.stat().st_mode & 0o777 == 0o600 and fresh.read_bytes() == b"secret"
    old = tmp_path / "old.key"
    old.write_bytes(b"x")
    descriptor = os.open(old, os.O_RDONLY)
    os.fchmod(descriptor, 0o644)
    os.close(descriptor)
    write_owner_only(old, b"new")
    assert old.stat().st_mode & 0o777 == 0o600 and old.read_bytes() == b"new"


def test_the_identity_stand_ins_private_key_is_never_readable_by_others(tmp_path, open_umask, no_chmod_after):
    settings = Settings(key_dir=tmp_path)
    ensure_identity_key(settings)
    (key,) = (tmp_path / "identity-platform").glob("*.pem")
    assert key.stat().st_mode & 0o077 == 0
