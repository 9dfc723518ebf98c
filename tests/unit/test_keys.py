"""API keys: parsing NIM_API_KEY and the key file, and the key ring's file watch."""

from __future__ import annotations

import logging
import os

import pytest

from nimctl.keys import KeyFormatError, KeyRing, parse_key_file, parse_key_list

SECRET = "sk-live-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_several_keys_with_and_without_names():
    keys = parse_key_list(f" alice:{SECRET} , plain-key,bob:with:colons ")
    assert [k.name for k in keys] == ["alice", "", "bob"]
    ring = KeyRing(keys)
    assert ring.match(SECRET.encode()) == "alice"
    assert ring.match(b"plain-key") == ""
    assert ring.match(b"with:colons") == "bob"  # split at the first colon only
    assert ring.match(b"alice:" + SECRET.encode()) is None
    assert ring.match(b"") is None and ring.match(b"nope") is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a:1,a:2", "name 'a' is used twice"),
        ("k1,k1", "a key is given twice"),
        ("x,,y", "key 2: the key is empty"),
        ("bad name:k", "key 1: the key name before ':' may only have"),
        ("ok:", "key 1: the key is empty"),
        ("ok:caf\u00e9", "key 1: the key has a character other than visible ASCII"),
    ],
)
def test_bad_key_lists_name_the_entry_never_the_key(value, message):
    with pytest.raises(KeyFormatError, match=message) as caught:
        parse_key_list(value)
    for secret in ("1", "2", "k1", "caf"):
        assert secret not in str(caught.value).replace(message, "")


def test_key_file_skips_comments_and_blank_lines():
    keys = parse_key_file(f"# rotated 2026-12-01\n\n  ci:{SECRET}  \n   # old: gone\nnext\n")
    assert [k.name for k in keys] == ["ci", ""]
    with pytest.raises(KeyFormatError, match="no keys"):
        parse_key_file("# nothing\n\n")
    with pytest.raises(KeyFormatError, match="line 3: the key name"):
        parse_key_file("a:1\n\n!!:2\n")


def test_digests_hide_keys_from_reprs():
    keys = parse_key_list(f"alice:{SECRET}")
    assert SECRET not in repr(keys) and SECRET not in repr(KeyRing(keys).__dict__)


def write(path, text: str) -> None:
    """As a Secret volume does: a new file swapped in (new inode)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_file_rotation_is_seen_at_most_once_a_second(tmp_path, monkeypatch):
    path = tmp_path / "keys"
    write(path, "old:k-old\n")
    clock = Clock()
    stats = []  # stats of the key file (other threads may stat other paths)
    real_stat = os.stat

    def counting_stat(p, *args, **kwargs):
        if p == path:
            stats.append(p)
        return real_stat(p, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    ring = KeyRing(parse_key_list("fixed:k-env"), path, clock=clock)
    assert ring.match(b"k-old") == "old" and ring.match(b"k-env") == "fixed"
    write(path, "new:k-new\n")
    before = len(stats)
    for _ in range(1000):  # within the second: no stat, the old keys
        assert ring.match(b"k-old") == "old"
    assert len(stats) == before
    clock.now += 1.0
    assert ring.match(b"k-new") == "new"
    assert ring.match(b"k-old") is None and ring.match(b"k-env") == "fixed"
    assert len(stats) == before + 1


@pytest.mark.parametrize("damage", ["empty", "unreadable", "missing", "clash", "bad line"])
def test_a_broken_file_keeps_the_last_good_keys_with_one_warning(tmp_path, caplog, damage):
    path = tmp_path / "keys"
    write(path, "a:k-a\n")
    clock = Clock()
    ring = KeyRing(parse_key_list("env:k-env"), path, clock=clock)
    if damage == "empty":
        write(path, "# all commented out\n")
    elif damage == "unreadable":
        write(path, "a:k-a2\n")
        path.chmod(0)
        if os.access(path, os.R_OK):  # root reads anything
            path.write_bytes(b"\xff\xfe not utf-8")
    elif damage == "missing":
        path.unlink()
    elif damage == "clash":
        write(path, "env:k-other\n")
    else:
        write(path, "a:k-a2\nno space allowed\n")
    with caplog.at_level(logging.WARNING, logger="nimctl.keys"):
        for _ in range(3):
            clock.now += 1.0
            assert ring.match(b"k-a") == "a" and ring.match(b"k-env") == "env"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "keeping the 2 key(s) last read" in warnings[0].getMessage()
    assert "k-a" not in warnings[0].getMessage() and "k-other" not in caplog.text
    path.unlink(missing_ok=True)
    write(path, "b:k-b\n")  # mended: read again
    clock.now += 1.0
    assert ring.match(b"k-b") == "b" and ring.match(b"k-a") is None
