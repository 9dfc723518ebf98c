"""One Hub file into huggingface_hub's cache, continued by the next run if this one is cut off.

huggingface_hub 2.4 resumes a file within one call only: each attempt writes a temporary file
of its own, deleted when the attempt fails (huggingface_hub PR 4228) and orphaned when the
process is killed (pod evicted, node drained, OOM). A 5 GB shard over a flaky link then starts
over on every run, and a pre-staging Job may never finish. Here the bytes go to a partial file
nimctl owns, one per repository, commit and path (`NIM_CACHE_PATH/downloads/partial/`), beside a
sidecar naming what they are part of: the Hub's ETag and size, and the byte server's own ETag
for `If-Range` (a CDN's ETag is its own, not the Hub's sha256). The next run continues with
`Range: bytes=N-`. Whatever makes the kept bytes doubtful (another ETag or size on the Hub, a
200 answering the Range) starts the file over rather than splicing two versions.

A finished file is checked (its size; an LFS file's sha256 against the Hub's listing), moved to
`blobs/<etag>`, and `hf_hub_download` links it into the snapshot as it links any blob it finds:
the cache layout, its own lock and `refs/` stay huggingface_hub's. URLs, the token, `HF_ENDPOINT`,
the file's metadata and the HTTP client with its retries are huggingface_hub's too.

Files huggingface_hub fetches through Xet (a Xet-backed repository with `hf_xet` installed and
`HF_HUB_DISABLE_XET` unset) are left to `hf_hub_download` whole: that protocol is not ranged HTTP.

Two runs on one cache (pods sharing a volume) take a lock per file, so one waits while the other
writes, then finds the blob there or continues the partial the other left.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    import httpx2

logger = logging.getLogger("nimctl.download")

PARTIAL, SIDECAR, LOCK = ".part", ".json", ".lock"
# Transient failures in a row, without a byte between them, before the run gives up (the file
# stays partial for the next run): huggingface_hub's http_get allows as many.
RETRIES = 5
RETRY_WAIT_S = 1.0
# Told of bytes counted as done that are thrown away, so the progress meter's baseline drops too.
Lost = Callable[[int], None]


@dataclass(frozen=True)
class HubFile:
    """A file of the repository's listing."""

    path: str
    size: int
    sha256: str | None = None  # LFS files: the Hub's hash of the content


@dataclass(frozen=True)
class _Target:
    """What the bytes are fetched against: the Hub's answer for the file, now."""

    path: str
    etag: str
    size: int
    sha256: str | None


@dataclass
class _State:
    kept: int
    validator: str | None  # the byte server's strong ETag, for If-Range
    digest: Any  # hashlib's sha256 over the bytes kept, for LFS files; else None

    def restart(self, sha256: str | None) -> None:
        self.kept = 0
        self.digest = hashlib.sha256() if sha256 else None


def partial_path(staging: Path, path: str) -> Path:
    """Where `path`'s bytes wait for the rest: one flat name per file (quoted)."""
    return staging / f"{quote(path, safe='')}{PARTIAL}"


def partial_bytes(staging: Path, paths: Iterable[str]) -> int:
    """Bytes in these files' partials: what the progress meter counts as done of them."""
    return sum(_size(partial_path(staging, path)) for path in paths)


def discard_other_commits(root: Path, commit: str) -> None:
    """Partials of the repository's other commits are never continued (the staging place is
    keyed by commit): free their disk. One held by a run still fetching that commit stays."""
    from filelock import FileLock, Timeout

    for partial in root.glob(f"*/*{PARTIAL}"):
        if partial.parent.name == commit:
            continue
        try:
            with FileLock(partial.with_suffix(LOCK), blocking=False):
                partial.unlink(missing_ok=True)
                partial.with_suffix(SIDECAR).unlink(missing_ok=True)
        except Timeout:
            continue
        logger.info("%s: discarded the partial of commit %s", partial.name, partial.parent.name)


def fetch(repo_id: str, commit: str, file: HubFile, cache: Path, staging: Path, lost: Lost) -> None:
    """`file` complete in the cache at `commit`; continued from its partial if there is one."""
    from huggingface_hub import (
        get_hf_file_metadata,
        hf_hub_download,
        hf_hub_url,
        try_to_load_from_cache,
    )
    from huggingface_hub.file_download import repo_folder_name

    # The very test hf_hub_download makes to choose Xet (hf_xet importable, not disabled).
    from huggingface_hub.utils._runtime import is_xet_available

    if isinstance(
        try_to_load_from_cache(repo_id, file.path, cache_dir=cache, revision=commit), str
    ):
        return  # complete already: not a single request
    url = hf_hub_url(repo_id, file.path, revision=commit)
    meta = get_hf_file_metadata(url, retry_on_errors=True)
    if meta.xet_file_data is None or not is_xet_available():
        if meta.etag is None:
            raise OSError(f"the hub gave no ETag for {url}")
        size = meta.size if meta.size is not None else file.size
        target = _Target(file.path, meta.etag, size, file.sha256)
        storage = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
        blob = storage / "blobs" / meta.etag
        partial = partial_path(staging, file.path)
        partial.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(partial.with_suffix(LOCK), file.path):
            if not blob.exists():  # another run may have finished it while this one waited
                _transfer(url, partial, target, lost)
                _move(partial, blob)
            # Gone only now: a run killed before the move must still know what the bytes are.
            partial.unlink(missing_ok=True)
            partial.with_suffix(SIDECAR).unlink(missing_ok=True)
    # With the blob in place this only links it into the snapshot (it asks the hub for the
    # ETag again, then takes its own lock); a Xet file it fetches too.
    hf_hub_download(repo_id, file.path, revision=commit, cache_dir=cache)


@contextmanager
def _file_lock(path: Path, name: str) -> Iterator[None]:
    """One run at a time on a file, as huggingface_hub locks its blobs (filelock; group-writable,
    so that pods of one group share a cache). Waiting is said: an idle run is otherwise a
    mystery."""
    from filelock import FileLock, Timeout

    lock = FileLock(path, mode=0o664)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        logger.info("%s: another run is fetching it; waiting for that run", name)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


class _StartOver(Exception):
    """The kept bytes were dropped; the next GET asks for the whole file."""


def _transfer(url: str, partial: Path, target: _Target, lost: Lost) -> None:
    """The partial grown to the whole file and checked; it stays for the next run on failure,
    unless its bytes are wrong."""
    import httpx2

    state = _resumable(partial, target, lost)
    partial.touch()  # an empty file needs no request, and a blob all the same
    failures = 0
    while state.kept < target.size:
        before = state.kept
        try:
            _receive(url, partial, target, state, lost)
        except _StartOver:
            continue  # no Range now: a 416 cannot come again
        except (httpx2.NetworkError, httpx2.TimeoutException, httpx2.RemoteProtocolError) as exc:
            failures = 0 if state.kept > before else failures + 1
            if failures > RETRIES:
                raise
            logger.warning(
                "%s: %s; continuing at byte %d", target.path, type(exc).__name__, state.kept
            )
            time.sleep(RETRY_WAIT_S)
            continue
        if state.kept < target.size:
            raise OSError(
                f"the body ended at byte {state.kept} of {target.size} (kept for the next run)"
            )
    if state.kept > target.size:
        _discard(partial, state.kept, lost)
        raise OSError(f"{state.kept} bytes received, the hub lists {target.size} (discarded)")
    if state.digest is not None and state.digest.hexdigest() != target.sha256:
        _discard(partial, state.kept, lost)
        raise OSError(
            f"sha256 {state.digest.hexdigest()} is not the hub's {target.sha256} (discarded)"
        )


def _resumable(partial: Path, target: _Target, lost: Lost) -> _State:
    """The bytes an earlier run kept, if they are of the file the Hub has now."""
    kept = _size(partial)
    state = _State(0, None, None)
    state.restart(target.sha256)
    if kept == 0:
        return state
    note = _read_sidecar(partial.with_suffix(SIDECAR))
    if note.get("etag") != target.etag or note.get("size") != target.size:
        logger.info(
            "%s: the %d bytes kept from an earlier run were of ETag %s, size %s; the hub has "
            "ETag %s, size %d now: starting over",
            target.path,
            kept,
            note.get("etag"),
            note.get("size"),
            target.etag,
            target.size,
        )
        _discard(partial, kept, lost)
        return state
    logger.info(
        "%s: continuing from byte %d of %d kept by an earlier run", target.path, kept, target.size
    )
    validator = note.get("validator")
    state.kept, state.validator = kept, validator if isinstance(validator, str) else None
    if state.digest is not None:
        with partial.open("rb") as kept_bytes:
            state.digest = hashlib.file_digest(kept_bytes, "sha256")
    return state


def _receive(url: str, partial: Path, target: _Target, state: _State, lost: Lost) -> None:
    """One GET, appended to the partial from `state.kept` on (or from the start, when the
    server sends the whole file)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import (  # type: ignore[attr-defined]
        build_hf_headers,
        hf_raise_for_status,
        http_stream_backoff,
    )

    # Identity: Range counts the file's bytes, not a compressed body's.
    headers = build_hf_headers(headers={"Accept-Encoding": "identity"})
    if state.kept:
        headers["Range"] = f"bytes={state.kept}-"
        if state.validator:
            headers["If-Range"] = state.validator
    # The client follows the hub's redirect to the CDN and drops the token when it leaves the
    # hub's origin. Failures mid-body are retried by the caller, from the bytes written.
    with http_stream_backoff(
        "GET",
        url,
        headers=headers,
        timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
        retry_on_exceptions=(),
        retry_on_status_codes=(408, 429),
    ) as response:
        if response.status_code == 416 and state.kept:
            # The server has no byte `kept`: what was kept is not of the copy it serves.
            logger.info(
                "%s: the server has no byte %d of it (416): starting over", target.path, state.kept
            )
            lost(state.kept)
            state.restart(target.sha256)
            state.validator = None
            raise _StartOver
        hf_raise_for_status(response)
        if response.status_code == 206 and state.kept:
            start = _range_start(response)
            if start != state.kept:
                raise OSError(f"asked for bytes from {state.kept}, the server sent from {start}")
        elif response.status_code == 200:
            if state.kept:  # Range ignored, or If-Range no longer matches: the whole file
                logger.info(
                    "%s: the server sent the whole file, not the rest: starting over", target.path
                )
                lost(state.kept)
            state.restart(target.sha256)
            state.validator = _strong_etag(response)
            # Before the first byte: the sidecar always describes the bytes beside it.
            _write_sidecar(partial.with_suffix(SIDECAR), target, state.validator)
        else:
            raise OSError(f"HTTP {response.status_code} from {response.url}")
        with partial.open("ab") as out:
            out.truncate(state.kept)
            for chunk in response.iter_bytes():
                out.write(chunk)
                out.flush()  # on disk as it comes: a kill loses only what is in flight
                if state.digest is not None:
                    state.digest.update(chunk)
                state.kept += len(chunk)


def _range_start(response: httpx2.Response) -> int | None:
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _strong_etag(response: httpx2.Response) -> str | None:
    """If-Range takes a strong validator only (RFC 9110, 13.1.5)."""
    etag = response.headers.get("ETag")
    return etag if etag and not etag.startswith("W/") else None


def _write_sidecar(path: Path, target: _Target, validator: str | None) -> None:
    content = {"path": target.path, "etag": target.etag, "size": target.size}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**content, "validator": validator}), encoding="utf-8")
    os.replace(tmp, path)


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        note = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return note if isinstance(note, dict) else {}


def _discard(partial: Path, kept: int, lost: Lost) -> None:
    partial.unlink(missing_ok=True)
    partial.with_suffix(SIDECAR).unlink(missing_ok=True)
    lost(kept)


def _move(partial: Path, blob: Path) -> None:
    """Into `blobs/` in one step, so that no reader ever sees a part of a blob. A staging
    place on another filesystem than the hub cache costs a copy, next to the blob first."""
    blob.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(partial, blob)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = blob.with_name(f".{blob.name}.{os.getpid()}.tmp")
        shutil.copyfile(partial, tmp)
        os.replace(tmp, blob)
        partial.unlink()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # absent, or finished between a glob and this
        return 0
