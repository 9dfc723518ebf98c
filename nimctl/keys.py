"""API keys: parsing `NIM_API_KEY` and `NIM_API_KEY_FILE`, and the set of keys accepted now.

Keys are held only as BLAKE2s digests of the key, so a key has the same cost and shape whatever
its length, a repr or a traceback cannot show one, and a request is compared against every key
(no early exit telling which one, or whether an early one, matched). The file is re-read when
its (mtime, size, inode) changes, checked at most once a second, so that a Kubernetes Secret
volume (which swaps a `..data` symlink) rotates keys with no restart and requests cost no stat.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("nimctl.keys")

KEY_NAME = re.compile(r"[A-Za-z0-9._-]+")
# Visible ASCII: what fits in an `Authorization` header unchanged (no spaces, no commas, which
# separate keys in NIM_API_KEY).
_KEY = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
CHECK_EVERY_S = 1.0


class KeyFormatError(ValueError):
    """A key that cannot be used; the message names where, never the key itself."""


@dataclass(frozen=True)
class ApiKey:
    """One accepted key: its name (empty when unnamed) and the digest of its secret."""

    name: str
    digest: bytes = field(repr=False)


def digest(secret: bytes) -> bytes:
    return hashlib.blake2s(secret).digest()


def parse_entry(entry: str, where: str) -> ApiKey:
    """`key` or `name:key` (split at the first colon)."""
    name, colon, secret = entry.partition(":")
    if not colon:
        name, secret = "", entry
    elif not KEY_NAME.fullmatch(name):
        raise KeyFormatError(
            f"{where}: the key name before ':' may only have letters, digits, '.', '_' and '-'"
        )
    if not _KEY.fullmatch(secret):
        what = "is empty" if not secret else "has a character other than visible ASCII or ','"
        raise KeyFormatError(f"{where}: the key {what}")
    return ApiKey(name, digest(secret.encode("ascii")))


def parse_key_list(value: str) -> tuple[ApiKey, ...]:
    """NIM_API_KEY: comma-separated keys."""
    keys = tuple(
        parse_entry(entry.strip(), f"key {n}") for n, entry in enumerate(value.split(","), 1)
    )
    return unique(keys, "NIM_API_KEY")


def parse_key_file(text: str) -> tuple[ApiKey, ...]:
    """NIM_API_KEY_FILE: one key a line; blank lines and lines starting with `#` skipped."""
    keys = []
    for n, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            keys.append(parse_entry(entry, f"line {n}"))
    if not keys:
        raise KeyFormatError("no keys in the file")
    return unique(keys, "the file")


def unique(keys: Iterable[ApiKey], where: str) -> tuple[ApiKey, ...]:
    """Refuse a name used twice (its label would count two keys) and a key given twice."""
    keys = tuple(keys)
    names: set[str] = set()
    digests: set[bytes] = set()
    for key in keys:
        if key.name and key.name in names:
            raise KeyFormatError(f"{where}: the key name {key.name!r} is used twice")
        if key.digest in digests:
            raise KeyFormatError(f"{where}: a key is given twice")
        names.add(key.name)
        digests.add(key.digest)
    return keys


def read_key_file(path: Path) -> tuple[ApiKey, ...]:
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFormatError(f"cannot read it ({type(exc).__name__})") from None
    return parse_key_file(text)


_MISSING = (-1, -1, -1)


def _signature(path: Path) -> tuple[int, int, int]:
    try:
        st = os.stat(path)  # follows the `..data` symlink of a Secret volume
    except OSError:
        return _MISSING
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class KeyRing:
    """The keys accepted now: NIM_API_KEY's, plus NIM_API_KEY_FILE's as last read.

    A file that cannot be read, is empty or has a bad line keeps the keys last read from it
    (one warning per change); so does a file whose keys clash with NIM_API_KEY's.
    """

    def __init__(
        self,
        fixed: tuple[ApiKey, ...],
        file: Path | None = None,
        *,
        check_every_s: float = CHECK_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fixed = fixed
        self._file = file.expanduser() if file is not None else None
        self._check_every_s = check_every_s
        self._clock = clock
        self._next_check = 0.0
        self._seen: tuple[int, int, int] | None = None  # the file's state last looked at
        self._keys = fixed
        if self._file is not None:
            self._reload()

    @classmethod
    def from_settings(cls, api_key: str | None, api_key_file: Path | None) -> KeyRing | None:
        """None when no key is configured (the API is open)."""
        if api_key is None and api_key_file is None:
            return None
        return cls(parse_key_list(api_key) if api_key else (), api_key_file)

    def match(self, token: bytes) -> str | None:
        """The name of the key `token` is ("" if unnamed), or None if it is none of them.

        Every key is compared, in constant time, whichever matches.
        """
        if self._file is not None and self._clock() >= self._next_check:
            self._reload()
        given = digest(token)
        found: str | None = None
        for key in self._keys:
            if hmac.compare_digest(given, key.digest):
                found = key.name
        return found

    def _reload(self) -> None:
        assert self._file is not None
        self._next_check = self._clock() + self._check_every_s
        signature = _signature(self._file)
        if signature == self._seen:
            return
        self._seen = signature
        try:
            if signature == _MISSING:
                raise KeyFormatError("no file there")
            keys = unique((*self._fixed, *read_key_file(self._file)), "NIM_API_KEY and the file")
        except KeyFormatError as exc:
            logger.warning(
                "NIM_API_KEY_FILE %s: %s; keeping the %d key(s) last read",
                self._file,
                exc,
                len(self._keys),
            )
            return
        logger.info("NIM_API_KEY_FILE %s read: %d key(s) in all", self._file, len(keys))
        self._keys = keys
