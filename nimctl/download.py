"""Pre-staging a profile's weights in NIM_CACHE_PATH, and proving them complete before an
offline start.

`nimctl download` fills the Hugging Face cache under `NIM_CACHE_PATH/huggingface/hub` with the
files the profile's engine will read, through huggingface_hub (so the layout is the one vLLM and
transformers already read, and `HF_TOKEN` / `HF_ENDPOINT` work as everywhere else). `serve`
then asks `cached_snapshot` whether that cache is complete for the profile: if it is, the engine
loads the snapshot directory with the hub switched off, so a start never waits on the network.

Each file is fetched by `nimctl.resume`: a file cut off by a killed run is continued by the
next one from the bytes it kept (`NIM_CACHE_PATH/downloads/partial/`), then handed to
huggingface_hub's layout.

Completeness is judged against the manifest `nimctl download` writes once every file is in
(`NIM_CACHE_PATH/downloads/`: the commit and the repository's file listing with sizes): a file
the profile needs that is absent or short is a named error before the engine starts, rather than
something vLLM discovers half-way through loading, or waits on the network for.

Nothing here imports vLLM; huggingface_hub is imported only by the functions that use it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from nimctl import resume
from nimctl.errors import ConfigError
from nimctl.profiles import BUILTIN_SCHEME, Profile
from nimctl.settings import NimSettings, env_name

logger = logging.getLogger("nimctl.download")

# Profiles do not pin a revision (yet): the default branch, as vLLM itself resolves it.
REVISION = "main"
PROGRESS_INTERVAL_S = 5.0
# Files fetched at once: huggingface_hub's snapshot_download default.
DOWNLOAD_WORKERS = 8
# Bytes on disk, bytes in all, bytes per second so far: a download's progress as numbers.
Measure = Callable[[int, int, float], None]

# What vLLM reads from a Hugging Face-format repository: the weights and their index, every
# configuration (model, generation, tokenizer, processor, chat template), tokenizer vocabularies.
# Other formats a repo may also carry (PyTorch .bin, GGUF, ONNX, original/ checkpoints, Mistral's
# consolidated file) are left on the Hub: they are often as large as the weights we do load.
_HF_FORMAT = (
    "*.safetensors",
    "*.safetensors.index.json",
    "*.json",
    "*.jinja",
    "*.txt",
    "*.model",
    "*.tiktoken",
)
_HF_FORMAT_IGNORE = ("consolidated*", "original/*", "*/consolidated*")
# Mistral's own format (`load_format`/`config_format: mistral`): one params.json, the
# consolidated weights, and the tekken (or sentencepiece) tokenizer.
_MISTRAL_FORMAT = (
    "params.json",
    "consolidated*.safetensors",
    "consolidated*.safetensors.index.json",
    "tekken.json",
    "tokenizer.model*",
    "generation_config.json",
    "*.jinja",
)
_MISTRAL_TOKENIZER = ("tekken.json", "tokenizer.model*")
# trust_remote_code models ship their modelling and processing code beside the weights.
_REMOTE_CODE = ("*.py",)


@dataclass(frozen=True)
class Files:
    """The part of a repository a profile needs, as huggingface_hub's allow/ignore patterns."""

    allow: tuple[str, ...]
    ignore: tuple[str, ...] = ()

    def wanted(self, path: str) -> bool:
        return any(fnmatch(path, p) for p in self.allow) and not any(
            fnmatch(path, p) for p in self.ignore
        )


@dataclass(frozen=True)
class HubModel:
    repo_id: str
    revision: str


def hub_model(profile: Profile) -> HubModel | None:
    """The Hub repository the profile loads; None for generated (`builtin:`) and local models."""
    model = profile.model
    if model.startswith(BUILTIN_SCHEME) or model.startswith((".", "/", "~")):
        return None
    return HubModel(model, REVISION)


def needed_files(engine_args: Mapping[str, Any]) -> Files:
    """The files vLLM will open for these engine arguments (not a list per repository: the
    format is what the arguments ask vLLM to load)."""
    mistral_weights = "mistral" in (
        engine_args.get("load_format"),
        engine_args.get("config_format"),
    )
    allow = list(_MISTRAL_FORMAT if mistral_weights else _HF_FORMAT)
    ignore = () if mistral_weights else _HF_FORMAT_IGNORE
    if engine_args.get("tokenizer_mode") == "mistral":
        allow += [p for p in _MISTRAL_TOKENIZER if p not in allow]
    if engine_args.get("trust_remote_code"):
        allow += _REMOTE_CODE
    return Files(tuple(allow), ignore)


def hub_cache(settings: NimSettings) -> Path:
    """huggingface_hub's cache under NIM_CACHE_PATH: where `serve` points HF_HOME too."""
    return settings.cache_dir / "huggingface" / "hub"


def cached_snapshot(profile: Profile, settings: NimSettings) -> Path | None:
    """The local snapshot directory holding every file the profile needs, or None if the
    cache lacks it. With NIM_DISABLE_MODEL_DOWNLOAD, an incomplete cache is a ConfigError that
    names the first missing file and the command that fetches it."""
    model = hub_model(profile)
    if model is None:
        return None
    missing, snapshot = _missing_files(model, needed_files(profile.engine_args), settings)
    if not missing:
        return snapshot
    if settings.disable_model_download:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ConfigError(
            f"{env_name('disable_model_download')} is set but {model.repo_id}@{model.revision} "
            f"is not complete in {hub_cache(settings)}: missing {missing[0]}{more}; run "
            f"`nimctl download --profile {profile.name}` with the same {env_name('cache_path')}"
        )
    return None


def _missing_files(
    model: HubModel, files: Files, settings: NimSettings
) -> tuple[list[str], Path | None]:
    """What the cache lacks (absent or not of the listed size), against the manifest
    `nimctl download` wrote. Plain file reads: `serve` calls this before it sets HF_HUB_OFFLINE,
    which huggingface_hub reads once, when it is first imported."""
    path = manifest_path(settings, model)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        commit, sizes = str(manifest["commit"]), dict(manifest["files"])
    except FileNotFoundError:
        return [f"{path.name} (nothing downloaded into this cache yet)"], None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{path} (unreadable: {exc})"], None
    snapshot = hub_cache(settings) / _storage_name(model.repo_id) / "snapshots" / commit
    wanted = sorted(p for p in sizes if files.wanted(p))
    if not wanted:
        return [f"any file matching {', '.join(files.allow)}"], None
    return [p for p in wanted if not _has(snapshot / p, sizes[p])], snapshot


def manifest_path(settings: NimSettings, model: HubModel) -> Path:
    """What `nimctl download` fetched: the commit and the repository's whole file listing with
    sizes (so a profile needing other files of the same repository is judged too)."""
    name = f"{_storage_name(model.repo_id)}@{model.revision}.json"
    return settings.cache_dir / "downloads" / name


def staging_dir(settings: NimSettings, model: HubModel, commit: str) -> Path:
    """Where a commit's files wait, partial, for the rest (`nimctl.resume`): nimctl's own, so
    that huggingface_hub neither deletes nor trips over them."""
    return _staging_root(settings, model) / commit


def _staging_root(settings: NimSettings, model: HubModel) -> Path:
    return settings.cache_dir / "downloads" / "partial" / _storage_name(model.repo_id)


def _storage_name(repo_id: str) -> str:
    return f"models--{repo_id.replace('/', '--')}"


class DownloadError(Exception):
    """A download that failed: the message names the file and the cause, on one line."""


@dataclass(frozen=True)
class Outcome:
    path: Path
    files: int
    bytes: int


def download(
    profile: Profile,
    settings: NimSettings,
    *,
    progress_interval: float = PROGRESS_INTERVAL_S,
    report: Callable[[str], None] | None = None,
    measure: Measure | None = None,
) -> Outcome:
    """Fill the cache with what `profile` loads: generate a builtin model, fetch a Hub one.

    A file already complete in the cache is not fetched again, and one cut off part-way is
    continued from the bytes kept, so a run after a failed or killed one fetches only what is
    still missing. `report` receives the progress lines (the logger by
    default), at most one per `progress_interval` seconds. With `measure` (what `serve` passes,
    to show the download as a start-up phase), the periodic samples go to it instead of lines
    to `report`, which then receives only the first and last lines.
    """
    say = report or logger.info
    if profile.model.startswith(BUILTIN_SCHEME):
        return _generate(profile, settings)
    model = hub_model(profile)
    if model is None:
        raise ConfigError(
            f"profile {profile.name} loads the local directory {profile.model}: there is "
            "nothing to download"
        )
    return _fetch(
        model, needed_files(profile.engine_args), settings, progress_interval, say, measure
    )


def _generate(profile: Profile, settings: NimSettings) -> Outcome:
    from nimctl import modelgen

    name = profile.model.removeprefix(BUILTIN_SCHEME)
    if name not in modelgen.BUILTINS:
        raise ConfigError(f"profile {profile.name}: unknown model {profile.model!r}")
    path = modelgen.ensure_model(name, settings.cache_dir)
    sizes = [p.stat().st_size for p in path.iterdir() if p.is_file()]
    return Outcome(path, len(sizes), sum(sizes))


def _fetch(
    model: HubModel,
    files: Files,
    settings: NimSettings,
    interval: float,
    say: Callable[[str], None],
    measure: Measure | None = None,
) -> Outcome:
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    cache = hub_cache(settings)
    api = HfApi()
    try:
        commit = api.repo_info(model.repo_id, revision=model.revision).sha
        tree = [
            f
            for f in api.list_repo_tree(model.repo_id, revision=commit, recursive=True)
            if isinstance(f, RepoFile)
        ]
    except Exception as exc:  # huggingface_hub's errors, httpx's, OSError: all end the run
        raise DownloadError(f"{model.repo_id}@{model.revision}: {_cause(exc)}") from exc
    if commit is None:  # the Hub always names the commit; a proxy or mirror might not
        raise DownloadError(f"{model.repo_id}@{model.revision}: the hub named no commit")
    wanted = [
        resume.HubFile(f.path, f.size, f.lfs.sha256 if f.lfs else None)
        for f in tree
        if files.wanted(f.path)
    ]
    listing = {f.path: f.size for f in wanted}
    if not listing:
        raise DownloadError(
            f"{model.repo_id}@{model.revision}: no file matches {', '.join(files.allow)}"
        )
    total = sum(listing.values())
    say(
        f"{model.repo_id}@{model.revision} (commit {commit[:12]}): {len(listing)} files, "
        f"{_size(total)} into {cache}"
    )
    staging = staging_dir(settings, model, commit)
    resume.discard_other_commits(_staging_root(settings, model), commit)
    meter = _Meter(cache / _storage_name(model.repo_id), commit, listing, total, staging)
    stop = threading.Event()
    reporter = threading.Thread(
        target=meter.run,
        args=(stop, interval, say, measure),
        name="download-progress",
        daemon=True,
    )
    reporter.start()
    try:
        _fetch_files(model.repo_id, commit, wanted, cache, staging, meter.lost)
    finally:
        stop.set()
        reporter.join()
    if measure is not None:
        measure(*meter.sample())
    say(meter.line(final=True))
    # The branch -> commit record huggingface_hub keeps, so that other tools given the repo id
    # (`HF_HUB_OFFLINE=1 vllm serve <repo>`) find this snapshot too.
    ref = cache / _storage_name(model.repo_id) / "refs" / model.revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit, encoding="utf-8")
    _write_json(
        manifest_path(settings, model),
        {
            "repo_id": model.repo_id,
            "revision": model.revision,
            "commit": commit,
            "files": {f.path: f.size for f in tree},
        },
    )
    return Outcome(cache / _storage_name(model.repo_id) / "snapshots" / commit, len(listing), total)


def _fetch_files(
    repo_id: str,
    commit: str,
    wanted: list[resume.HubFile],
    cache: Path,
    staging: Path,
    lost: resume.Lost,
) -> None:
    """Several files at once, as `snapshot_download` does; one call per file so that a failure
    names its file (a weight's bytes come from a CDN URL that does not). Files already in the
    cache are not asked for again; the first failure cancels what has not started."""
    with ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS, thread_name_prefix="download") as pool:
        futures = {
            pool.submit(resume.fetch, repo_id, commit, file, cache, staging, lost): file.path
            for file in sorted(wanted, key=lambda f: f.path)
        }
        for future in as_completed(futures):
            error = future.exception()
            if error is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                raise DownloadError(f"{futures[future]}: {_cause(error)}") from error


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    """Atomically: a manifest is the proof of a complete download, never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class _Meter:
    """Bytes on disk for the needed files: complete ones in the snapshot, partial ones in the
    staging place (`nimctl.resume`) and as huggingface_hub's `.incomplete` blobs (its Xet
    downloads). Reading the disk rather than hooking progress bars keeps the numbers right
    across retries and threads."""

    def __init__(
        self,
        storage: Path,
        commit: str,
        sizes: Mapping[str, int],
        total: int,
        staging: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._storage = storage
        self._snapshot = storage / "snapshots" / commit
        self._staging = staging
        self._sizes = sizes
        self._total = total
        self._guard = threading.Lock()
        # huggingface_hub's temporary files of killed runs: never continued, so never progress.
        self._orphans = set(self._incomplete())
        self._clock = clock
        self._began = clock()
        self._start = self.done()

    def done(self) -> int:
        complete = sum(n for p, n in self._sizes.items() if (self._snapshot / p).is_file())
        partial = resume.partial_bytes(self._staging, self._sizes) + sum(
            _file_size(p) for p in self._incomplete() if p not in self._orphans
        )
        return min(complete + partial, self._total)

    def lost(self, n: int) -> None:
        """Bytes counted as done that will be fetched again (a partial discarded or restarted):
        off the baseline too, so that the rate stays this run's."""
        with self._guard:
            self._start -= n

    def sample(self) -> tuple[int, int, float]:
        """Bytes done, the total, and the rate since this run began: bytes already in the cache
        when it began, complete or partial, count as done but not as speed."""
        done = self.done()
        elapsed = max(self._clock() - self._began, 1e-6)
        with self._guard:
            start = self._start
        return done, self._total, max(done - start, 0) / elapsed

    def _incomplete(self) -> list[Path]:
        return list((self._storage / "blobs").glob("*.incomplete"))

    def line(self, final: bool = False) -> str:
        done, _, rate = self.sample()
        left = self._total - done
        eta = f", ETA {_duration(left / rate)}" if rate > 0 and left > 0 else ""
        state = "done" if final else "downloading"
        return (
            f"{state}: {_size(done)} / {_size(self._total)} "
            f"({100 * done / max(self._total, 1):.0f}%), {_size(rate)}/s{eta}"
        )

    def run(
        self,
        stop: threading.Event,
        interval: float,
        say: Callable[[str], None],
        measure: Measure | None = None,
    ) -> None:
        while not stop.wait(interval):
            if measure is not None:
                measure(*self.sample())
            else:
                say(self.line())


def _has(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # finished or abandoned between the glob and the stat
        return 0


def _cause(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
