"""Generated models in the cache: built once, atomically, and reused.

A model is built into a temporary sibling directory and renamed into place, with a completion
marker written last, so a crash mid-build or two processes building at once never leave a
half-written model that a later start would load.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

MARKER = ".nimctl-complete.json"
BUILDING_PREFIX = ".building-"
# A build takes seconds; a temporary directory this old belongs to a crashed process.
STALE_BUILD_SECONDS = 3600.0


def versioned_dir(cache_dir: Path, name: str, version: int) -> Path:
    """Where generated model `name` lives: versioned, so a recipe change never reuses a model
    built by an older recipe."""
    return Path(cache_dir) / "models" / f"{name}-v{version}"


def ensure_built(
    target: Path,
    build: Callable[[Path], None],
    *,
    version: int,
    required: tuple[str, ...],
    marker: dict[str, object] | None = None,
) -> Path:
    """`target`, after running `build(directory)` into a fresh directory if it is incomplete."""
    if is_complete(target, version, required):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f"{BUILDING_PREFIX}{target.name}-", dir=target.parent))
    # mkdtemp makes it 0700 (and torch writes weights 0600); a shared cache, say an image built
    # by root and served by another user, must stay readable after the rename.
    tmp.chmod(0o755)
    try:
        build(tmp)
        for path in tmp.iterdir():
            path.chmod(0o644)
        info = {**(marker or {}), "version": version}
        (tmp / MARKER).write_text(json.dumps(info) + "\n", encoding="utf-8")
        _install(tmp, target, version, required)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def is_complete(path: Path, version: int, required: tuple[str, ...]) -> bool:
    # The marker is written last; the file check guards against hand-edited directories.
    marker = path / MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(info, dict) or info.get("version") != version:
        return False
    return all((path / name).is_file() for name in required)


def _install(tmp: Path, target: Path, version: int, required: tuple[str, ...]) -> None:
    """Rename the finished build into place, tolerating a concurrent builder that won the race."""
    error: OSError | None = None
    for _ in range(5):
        try:
            os.rename(tmp, target)
            return
        except OSError as exc:
            error = exc
            if is_complete(target, version, required):
                return  # another process finished first; builds are deterministic
            _discard(target)  # leftover incomplete directory (not from an atomic build)
    raise RuntimeError(f"could not install a generated model at {target}") from error


def _discard(path: Path) -> None:
    # Move aside first, so nobody sees a directory that is half deleted.
    trash = path.with_name(f"{BUILDING_PREFIX}trash-{uuid.uuid4().hex}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _remove_stale_builds(models_dir: Path) -> None:
    now = time.time()
    for entry in models_dir.glob(f"{BUILDING_PREFIX}*"):
        try:
            if now - entry.stat().st_mtime > STALE_BUILD_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)
        except FileNotFoundError:
            continue
