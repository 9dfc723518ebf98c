"""`nimctl serve | list-profiles | show-profile | check`.

Configuration errors end the command with one line on stderr and exit status 2 (found while the
engine starts, they are logged and end `serve` with status 2 too); an engine that fails or dies
ends `serve` with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nimctl import __version__
from nimctl.config import EffectiveConfig, effective_config
from nimctl.errors import ConfigError
from nimctl.hardware import detect_gpus
from nimctl.profiles import (
    BUILTIN_SCHEME,
    Profile,
    fit,
)
from nimctl.settings import (
    NimSettings,
    env_name,
    load_settings,
    settings_tables,
    unknown_nim_variables,
)

if TYPE_CHECKING:
    pass

logger = logging.getLogger("nimctl.cli")
DOC_BEGIN = "<!-- settings:begin"
DOC_END = "<!-- settings:end -->"

EXIT_CONFIG = 2
# The event loop of `serve`, under uvicorn's name for the same choice (asyncio | uvloop | auto).
LOOP_VARIABLE = "UVICORN_LOOP"
DEFAULT_LOOP = "asyncio"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        func: Callable[[argparse.Namespace], int] = args.func  # the subcommand's
        return func(args)
    except ConfigError as exc:
        print(f"nimctl: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nimctl", description="NIM-compatible serving of vision-language models on vLLM."
    )
    parser.add_argument("--version", action="version", version=f"nimctl {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve a model profile over HTTP")
    _add_selection_flags(serve)
    serve.add_argument("--host", help="bind address (NIM_HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="HTTP port (NIM_SERVER_PORT, default 8000)")
    serve.set_defaults(func=_serve)

    worker = sub.add_parser(
        "worker", help="join a multi-node leader's Ray cluster (every node but the leader)"
    )
    _add_selection_flags(worker)
    worker.add_argument(
        "--leader", help="leader host or IP (NIM_LEADER_ADDRESS, else LWS_LEADER_ADDRESS)"
    )
    worker.set_defaults(func=_worker)

    listing = sub.add_parser("list-profiles", help="every profile and whether it runs here")
    listing.set_defaults(func=_list_profiles)

    show = sub.add_parser("show-profile", help="a profile as it would run, as YAML")
    show.add_argument("name", help="profile name or id")
    show.set_defaults(func=_show_profile)

    check = sub.add_parser("check", help="validate the configuration and print it")
    _add_selection_flags(check)
    check.set_defaults(func=_check)

    k8s = sub.add_parser("k8s", help="Kubernetes manifests for a profile, as YAML")
    k8s.add_argument("--profile", required=True, help="profile name or id")
    k8s.add_argument("--values", type=Path, help="YAML merged over nimctl/k8s/values.yaml")
    k8s.add_argument("--release", help="object names (default: the profile name as a DNS label)")
    k8s.add_argument("--namespace", help="namespace of every object (default: kubectl's)")
    k8s.set_defaults(func=_k8s)

    doc = sub.add_parser("config-doc", help="the NIM_* settings tables of the documentation")
    doc.add_argument(
        "--write",
        type=Path,
        metavar="FILE",
        help="replace the generated block of FILE (docs/configuration.md)",
    )
    doc.set_defaults(func=_config_doc)
    return parser


def _add_selection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", help="profile name or id (NIM_MODEL_PROFILE)")
    parser.add_argument("--model", help="model source override (NIM_MODEL_PATH)")


def _settings(args: argparse.Namespace) -> NimSettings:
    return load_settings(
        model_profile=getattr(args, "profile", None),
        model_path=getattr(args, "model", None),
        host=getattr(args, "host", None),
        server_port=getattr(args, "port", None),
    )


def _resolve(settings: NimSettings) -> EffectiveConfig:
    """The configuration `serve` and `check` run: the selected profile must fit this machine."""
    return effective_config(settings, gpus=detect_gpus())


def _serve(args: argparse.Namespace) -> int:
    from nimctl.observability import configure_logging

    settings = _settings(args)
    configure_logging(settings)
    for name in unknown_nim_variables():
        logger.warning("%s is not a nimctl setting and is ignored", name)
    config = _resolve(settings)
    profile = config.profile
    logger.info("profile %s (%s, id %s)", profile.name, profile.tag, config.profile_id)
    _prepare_cpu_twin(profile)
    from nimctl.engine.environment import prepare_engine_environment

    prepare_engine_environment(settings, profile, os.environ)
    loop_factory = _loop_factory(os.environ.get(LOOP_VARIABLE, DEFAULT_LOOP))
    sock = _bind(settings.host, settings.server_port)

    from nimctl.api import create_app
    from nimctl.engine.vllm import VllmEngine  # vllm itself is imported later, off the loop
    from nimctl.server import serve
    from nimctl.tracing import tracing_from_settings

    app = create_app(
        settings,
        profile,
        VllmEngine(settings, profile),
        profile_id=config.profile_id,
        on_ready=freeze_startup_heap,
        tracing=tracing_from_settings(settings, os.environ),
    )
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(serve(app, sock, settings))


def freeze_startup_heap() -> None:
    """Move everything alive once the engine has started out of the garbage collector's sight.

    vLLM, torch and transformers leave ~640,000 long-lived objects in this process; every full
    collection walks them all: 345-370 ms of CPU here, on the event loop, whenever enough new
    objects have survived under load (a stalled loop and a higher HTTP CPU per request in some
    benchmark rounds, but not others). After the freeze a full collection takes under 1 ms.
    vLLM's own server does the same after start-up (`freeze_gc_heap`). Frozen objects are never
    collected: they are the server's for its whole life anyway.
    """
    gc.collect()
    gc.freeze()
    logger.debug("garbage collector: %d start-up objects frozen", gc.get_freeze_count())


def _prepare_cpu_twin(profile: Profile) -> None:
    """A twin whose vLLM module imports torchvision gets the CPU side copy of it, before anything
    imports transformers (process-wide, so here at the edge)."""
    if not profile.model.startswith(BUILTIN_SCHEME) or profile.hardware.gpus:
        return
    from nimctl import modelgen

    builtin = modelgen.BUILTINS.get(profile.model.removeprefix(BUILTIN_SCHEME))
    if builtin is not None and builtin.cpu_torchvision:
        from nimctl.engine.cpu_torchvision import activate

        logger.info("CPU twin: torchvision's Python modules from %s", activate(os.environ))


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop `serve` runs on: asyncio's own unless UVICORN_LOOP asks for uvloop.

    asyncio's by default, as measured on the tiny profile (2 cores, alternating rounds): uvloop
    served no faster (streaming at concurrency 1 and 16 within noise, HTTP CPU per request
    equal, 59-67 against 70-90 requests/s at max_tokens 1), and both drain cleanly. Most of the
    HTTP process's time is Python (vLLM's output handling, SSE, worker threads taking the GIL),
    not the loop. `uvloop` (or `auto`, uvicorn's name for "uvloop if installed") selects it,
    to compare again on other hardware.
    """
    name = choice.strip().lower() or DEFAULT_LOOP
    if name not in ("auto", "uvloop", "asyncio"):
        raise ConfigError(
            f"invalid {LOOP_VARIABLE}={choice!r}: accepted values are asyncio, uvloop, auto"
        )
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise ConfigError(f"{LOOP_VARIABLE}=uvloop, but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def _bind(host: str, port: int) -> socket.socket:
    """Bind before the engine starts, so that a taken port fails in a second, not after load.

    The protocol is named (IPPROTO_TCP, not 0): asyncio sets TCP_NODELAY on accepted sockets
    only when it is, and without it every response on a kept-alive connection waits ~40 ms for
    the client's delayed ACK (Nagle's algorithm).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}); set {env_name('server_port')} "
            f"or {env_name('host')}"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(args: argparse.Namespace) -> int:
    """A Ray node for the leader's engine: checks this machine's share, then becomes `ray`."""
    from nimctl.engine.ray_cluster import exec_worker, ray_command, wait_for_leader
    from nimctl.observability import configure_logging

    settings = _settings(args)
    configure_logging(settings)
    profile = _resolve(settings).profile
    if profile.hardware.nodes < 2:
        raise ConfigError(
            f"profile {profile.name} runs on one node; `nimctl worker` is for the other nodes "
            "of a multi-node profile (set NIM_NUM_COMPUTE_NODES or choose such a profile)"
        )
    leader = args.leader or settings.leader_address or os.environ.get("LWS_LEADER_ADDRESS")
    if not leader:
        raise ConfigError(
            "no leader address: pass --leader, or set NIM_LEADER_ADDRESS (LeaderWorkerSet "
            "sets LWS_LEADER_ADDRESS)"
        )
    ray_command()  # fail now, with the install hint, rather than after the wait
    wait_for_leader(leader, settings.ray_port, settings.cluster_start_timeout)
    exec_worker(leader, settings.ray_port, profile.hardware.gpus // profile.hardware.nodes)
    return 0  # not reached: the process is now Ray


def _list_profiles(args: argparse.Namespace) -> int:
    gpus = detect_gpus()
    store = effective_config(_settings(args)).store
    print("SYSTEM")
    if gpus:
        for gpu in gpus:
            print(f"  - GPU {gpu.name} ({gpu.memory_gib:g} GiB)")
    else:
        print("  - no GPU visible: CPU profiles only")
    groups: dict[bool, list[str]] = {True: [], False: []}
    for profile in sorted(store, key=lambda p: p.name):
        verdict = fit(profile, gpus)
        groups[verdict.ok].append(
            f"    - {store.id_of(profile)} ({profile.name}, {profile.tag}) [{verdict.reason}]"
        )
    print("MODEL PROFILES")
    print("  - Compatible with system and runnable:")
    print("\n".join(groups[True]) or "    (none)")
    print("  - Incompatible with system:")
    print("\n".join(groups[False]) or "    (none)")
    return 0


def _show_profile(args: argparse.Namespace) -> int:
    config = effective_config(_settings(args), name=args.name)
    print(f"# id: {config.profile_id}")
    print(config.profile.to_yaml(), end="")
    return 0


def _k8s(args: argparse.Namespace) -> int:
    from nimctl.k8s import dump_yaml, load_values, render_manifests

    # The profile as written: the pods' own settings come from the values file's env, and
    # render_manifests validates them as each pod will (settings_for_pod).
    config = effective_config(load_settings(), name=args.profile)
    objects = render_manifests(
        config.written,
        config.profile_id,
        load_values(args.values),
        release=args.release,
        namespace=args.namespace,
    )
    print(dump_yaml(objects), end="")
    return 0


def _config_doc(args: argparse.Namespace) -> int:
    tables = settings_tables()
    if args.write is None:
        print(tables, end="")
        return 0
    text = args.write.read_text()
    begin, end = text.find(DOC_BEGIN), text.find(DOC_END)
    if begin < 0 or end < begin:
        raise ConfigError(f"{args.write} has no '{DOC_BEGIN}' ... '{DOC_END}' block")
    begin = text.index("\n", begin) + 1
    args.write.write_text(f"{text[:begin]}\n{tables}\n{text[end:]}")
    return 0


def _check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    config = _resolve(settings)
    profile = config.profile
    print("# effective NIM_* settings")
    for name, value in settings.model_dump(mode="json").items():
        shown = "***" if name == "api_key" and value is not None else value
        print(f"{env_name(name)}={'' if shown is None else shown}")
    for name in unknown_nim_variables():
        print(f"# warning: {name} is not a nimctl setting and is ignored")
    print(f"# profile {profile.name}, id {config.profile_id}")
    print(profile.to_yaml(), end="")
    try:
        from nimctl.engine.vllm import check_engine_config
    except ImportError:  # e.g. a machine that only renders manifests
        print("# engine arguments not checked: vLLM is not installed here")
        return 0
    check_engine_config(profile, settings)
    print("# engine arguments: accepted by vLLM's argument parser")
    return 0
