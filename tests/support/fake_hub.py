"""A local stand-in for the Hugging Face Hub's file API, enough for huggingface_hub 2.4's
`snapshot_download` of one model repository (point `HF_ENDPOINT` at it).

Answers what huggingface_hub asks, as the Hub answers it:
- `GET /api/models/{repo}/revision/{rev}`: the commit (`sha`) and `siblings`;
- `GET /api/models/{repo}/tree/{rev}`: the recursive file listing (path, size, oid, lfs);
- `HEAD|GET /{repo}/resolve/{rev}/{file}`: `X-Repo-Commit` and `ETag` always; small files
  answered directly (`Content-Length`), weights (`*.safetensors`, LFS on the Hub) redirected to a
  "CDN" path with `Location`, `X-Linked-Etag` and `X-Linked-Size`, as the Hub does;
- `GET /cdn/{sha256}`: the bytes, honouring `Range: bytes=N-` with 206 unless `If-Range` names
  another ETag (then 200 and the whole file, as RFC 9110 says).

The repository may change between runs, as a real one does: assign `commit`, or replace a
file in `files` (new bytes, so a new ETag).

Faults for the tests: `drop_once[file] = n` sends the full `Content-Length` but closes the
connection after `n` body bytes, once; `refuse` holds files whose bytes are answered 404;
`hold[file]` sends half the body, then waits for that event (at most HOLD_S) before the rest,
once, so that a test sees a download under way; `stall_at(file, n)` sends the file's bytes up to
offset `n`, then tells the test (the event it returns) and sends nothing more until `release`
is set, once, so that a test can kill the client at a known byte; `ignore_range` answers every
Range with 200 and the whole file, as a server without range support does; `refuse_range`
answers every Range with 416.
Every request is recorded (method, path, Range, If-Range, Authorization), and `served` counts
each file's body bytes sent.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors",)
HOLD_S = 60.0
# A stalled response waits this long at most for `release`: longer than any test's deadline.
STALL_S = 300.0


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    range: str | None
    authorization: str | None
    if_range: str | None = None


@dataclass(frozen=True)
class RepoFile:
    path: str
    data: bytes

    @property
    def lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES)

    # Cached: a test's shard is hashed once, not on every request that names it.
    @cached_property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def etag(self) -> str:
        """The Hub's: the sha256 of an LFS file, the git blob id of any other."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class FakeHub:
    repo_id: str
    files: dict[str, RepoFile]
    drop_once: dict[str, int] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)
    hold: dict[str, threading.Event] = field(default_factory=dict)
    ignore_range: bool = False
    refuse_range: bool = False  # 416 to every Range, as a server whose copy is shorter
    commit: str = COMMIT
    release: threading.Event = field(default_factory=threading.Event)
    seen: list[Seen] = field(default_factory=list)
    served: dict[str, int] = field(default_factory=dict)
    _stalls: dict[str, tuple[int, threading.Event]] = field(default_factory=dict)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of_directory(cls, repo_id: str, directory: Path) -> FakeHub:
        files = {
            p.relative_to(directory).as_posix(): RepoFile(
                p.relative_to(directory).as_posix(), p.read_bytes()
            )
            for p in sorted(directory.rglob("*"))
            if p.is_file() and not p.name.startswith(".")
        }
        return cls(repo_id, files)

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def gets(self, name: str, since: int = 0) -> list[Seen]:
        """The GETs (from request number `since` on) that carried `name`'s bytes: its CDN blob
        if LFS, else its resolve URL."""
        file = self.files[name]
        resolve = f"/{self.repo_id}/resolve/"

        def carried(s: Seen) -> bool:
            if file.lfs:
                return s.path == f"/cdn/{file.sha256}"
            return s.path.startswith(resolve) and s.path.endswith(f"/{name}")

        return [s for s in self.seen[since:] if s.method == "GET" and carried(s)]

    def take_hold(self, name: str) -> threading.Event | None:
        with self._lock:
            return self.hold.pop(name, None)

    def take_drop(self, name: str) -> int | None:
        with self._lock:
            return self.drop_once.pop(name, None)

    def stall_at(self, name: str, offset: int) -> threading.Event:
        """The next GET of `name`'s bytes stops after byte `offset` of the file (the event is set
        once it has been sent) and sends nothing more until `release` is set."""
        reached = threading.Event()
        with self._lock:
            self._stalls[name] = (offset, reached)
        return reached

    def take_stall(self, name: str) -> tuple[int, threading.Event] | None:
        with self._lock:
            return self._stalls.pop(name, None)

    def count(self, name: str, sent: int) -> None:
        with self._lock:
            self.served[name] = self.served.get(name, 0) + sent


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read `seen`, not a log."""

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, *, body: bool) -> None:
        hub = self.server.hub
        path = unquote(urlsplit(self.path).path)
        hub.record(
            Seen(
                self.command,
                path,
                self.headers.get("Range"),
                self.headers.get("Authorization"),
                self.headers.get("If-Range"),
            )
        )
        api = re.fullmatch(rf"/api/models/{re.escape(hub.repo_id)}/(revision|tree)/([^/]+)", path)
        resolve = re.fullmatch(rf"/{re.escape(hub.repo_id)}/resolve/([^/]+)/(.+)", path)
        cdn = re.fullmatch(r"/cdn/([0-9a-f]{64})", path)
        if api and api.group(1) == "revision":
            siblings = [{"rfilename": name} for name in hub.files]
            self._json(
                {"id": hub.repo_id, "sha": hub.commit, "private": False, "siblings": siblings}
            )
        elif api:
            self._json(
                [
                    {
                        "type": "file",
                        "path": f.path,
                        "size": len(f.data),
                        "oid": f.git_oid,
                        **(
                            {"lfs": {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}}
                            if f.lfs
                            else {}
                        ),
                    }
                    for f in hub.files.values()
                ]
            )
        elif resolve and resolve.group(2) in hub.files:
            self._resolve(hub.files[resolve.group(2)], body)
        elif cdn and (match := [f for f in hub.files.values() if f.sha256 == cdn.group(1)]):
            self._bytes(match[0], body)
        else:
            self._status(404, {"X-Error-Code": "EntryNotFound"})

    def _resolve(self, file: RepoFile, body: bool) -> None:
        if not file.lfs:
            self._bytes(file, body)
            return
        host = self.headers.get("Host", "127.0.0.1")
        self._status(
            302,
            {
                "Location": f"http://{host}/cdn/{file.sha256}",
                "X-Repo-Commit": self.server.hub.commit,
                "ETag": f'"{file.git_oid}"',
                "X-Linked-Etag": f'"{file.sha256}"',
                "X-Linked-Size": str(len(file.data)),
            },
        )

    def _bytes(self, file: RepoFile, body: bool) -> None:
        hub = self.server.hub
        if body and file.path in hub.refuse:
            self._status(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": hub.commit})
            return
        start = 0
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if_range = self.headers.get("If-Range")
        if hub.ignore_range or (if_range is not None and if_range != f'"{file.etag}"'):
            wanted = None
        if wanted and hub.refuse_range:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(file.data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if wanted:
            start = int(wanted.group(1))
        data = file.data[start:]
        self.send_response(206 if wanted else 200)
        self.send_header("Content-Length", str(len(data)))
        if wanted:
            self.send_header(
                "Content-Range", f"bytes {start}-{len(file.data) - 1}/{len(file.data)}"
            )
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("X-Repo-Commit", hub.commit)
        self.send_header("ETag", f'"{file.etag}"')
        self.end_headers()
        if not body:
            return
        held = hub.take_hold(file.path)
        if held is not None:
            self._send(file, data[: len(data) // 2])
            held.wait(HOLD_S)
            self._send(file, data[len(data) // 2 :])
            return
        stall = hub.take_stall(file.path)
        if stall is not None:
            offset, reached = stall
            self._send(file, data[: max(offset - start, 0)])
            reached.set()
            hub.release.wait(STALL_S)
            self.close_connection = True
            return
        cut = hub.take_drop(file.path)
        if cut is None:
            self._send(file, data)
            return
        # The promised length, then silence: the client sees the connection end mid-body.
        self._send(file, data[:cut])
        self.close_connection = True

    def _send(self, file: RepoFile, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()
        self.server.hub.count(file.path, len(data))

    def _json(self, content: object) -> None:
        data = json.dumps(content).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Repo-Commit", self.server.hub.commit)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(data)

    def _status(self, code: int, headers: dict[str, str]) -> None:
        self.send_response(code)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: FakeHub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub


@contextmanager
def serving(hub: FakeHub) -> Iterator[FakeHub]:
    """`hub` answering on 127.0.0.1 (its `url`) until the block ends."""
    server = _Server(hub)
    thread = threading.Thread(target=server.serve_forever, name="fake-hub", daemon=True)
    thread.start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hub
    finally:
        hub.release.set()
        server.shutdown()
        server.server_close()
        thread.join()
