"""The pod of a nimctl deployment: its container, environment, probes, resources and volumes.

The values file's `env:` is written into the container as given (`container_env`); everything
else that depends on a `NIM_*` variable (the port, the cache mount, the probes' scheme) reads the
pod's validated settings (`nimctl.config.pod_config`), never the variable's string.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from nimctl import __version__
from nimctl.errors import ConfigError
from nimctl.k8s.values import ProbeValues, StartupProbeValues, Values
from nimctl.profiles import Profile
from nimctl.settings import NimSettings, unknown_nim_variables

PORT_NAME = "http-openai"
GPU_RESOURCE = "nvidia.com/gpu"
CONTAINER_NAME = "nimctl"
RAY_PORT_NAME = "ray"
# What stopping takes after nimctl's drain: uvicorn closes idle connections (5 s), then vLLM's
# engine shuts down (10 s); see nimctl.server.
ENGINE_STOP_MARGIN_S = 15
# The profile-owned variables that values may not set: the rendered objects depend on them.
_PROFILE_OWNED_ENV = ("NIM_MODEL_PROFILE",)
# Set on multi-node pods from the multiNode values; a Deployment's pod has no workers to wait for.
_MULTI_NODE_ENV = {
    "NIM_NUM_COMPUTE_NODES": "multiNode.enabled and multiNode.nodes",
    "NIM_CLUSTER_START_TIMEOUT": "multiNode.clusterStartTimeout",
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_UNITS = {
    None: 1,
    "m": 10**-3,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


# Where apiKeySecret is mounted: a directory, so that the kubelet's updates (a `..data` symlink
# swapped) reach the file; a subPath mount would never change.
API_KEYS_DIR = "/var/run/secrets/nimctl/api-keys"


def pod_spec(
    spec: Values, profile: Profile, container: dict[str, Any], gpus: int, cache: dict[str, Any]
) -> dict[str, Any]:
    pod: dict[str, Any] = {
        # nimctl never calls the API server.
        "automountServiceAccountToken": False,
        # Service links would inject <SERVICE>_PORT variables, e.g. NIM_SERVER_PORT for a
        # Service named nim-server, into a process configured by NIM_* variables.
        "enableServiceLinks": False,
        "securityContext": dict(spec.podSecurityContext),
        "terminationGracePeriodSeconds": spec.terminationGracePeriodSeconds,
    }
    if spec.imagePullSecrets:
        pod["imagePullSecrets"] = [dict(s) for s in spec.imagePullSecrets]
    pod["containers"] = [container]
    pod["volumes"] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_quantity(profile)}},
        {"name": "cache", **cache},
    ]
    if spec.apiKeySecret.secretName:
        pod["volumes"].append(
            {
                "name": "api-keys",
                "secret": {"secretName": spec.apiKeySecret.secretName, "defaultMode": 0o440},
            }
        )
    if spec.nodeSelector:
        pod["nodeSelector"] = dict(spec.nodeSelector)
    if spec.affinity:
        pod["affinity"] = dict(spec.affinity)
    tolerations = [dict(t) for t in spec.tolerations]
    gpu_toleration = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    if gpus and gpu_toleration not in tolerations:
        tolerations.insert(0, gpu_toleration)
    if tolerations:
        pod["tolerations"] = tolerations
    return pod


def main_container(
    spec: Values,
    settings: NimSettings,
    env: list[dict[str, Any]],
    gpus: int,
    startup_failures: int,
    extra_ports: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """`startup_failures`: the startup probe's failureThreshold, as nimctl.k8s.startup
    derives it."""
    container = _image_fields(spec)
    if spec.customCommand:
        container["command"] = list(spec.customCommand)
    if spec.customArgs:
        container["args"] = list(spec.customArgs)
    container["env"] = env
    container["ports"] = [
        {"name": PORT_NAME, "containerPort": settings.server_port, "protocol": "TCP"}
    ]
    container["ports"] += [dict(p) for p in extra_ports]
    container["resources"] = _resources(spec, gpus)
    container["volumeMounts"] = _volume_mounts(spec, settings)
    scheme = "HTTPS" if tls_enabled(settings) else "HTTP"
    for key, probe, failures in (
        ("startupProbe", spec.startupProbe, startup_failures),
        ("livenessProbe", spec.livenessProbe, spec.livenessProbe.failureThreshold),
        ("readinessProbe", spec.readinessProbe, spec.readinessProbe.failureThreshold),
    ):
        if probe.enabled:
            container[key] = _probe(probe, failures, scheme)
    if spec.preStopSleepSeconds:
        # An exec hook rather than lifecycle.sleep, which needs Kubernetes 1.30+ feature gates.
        container["lifecycle"] = {
            "preStop": {"exec": {"command": ["sleep", str(spec.preStopSleepSeconds)]}}
        }
    if spec.containerSecurityContext:
        container["securityContext"] = dict(spec.containerSecurityContext)
    return container


def worker_container(
    spec: Values, settings: NimSettings, env: list[dict[str, Any]], gpus: int
) -> dict[str, Any]:
    """`nimctl worker`: a Ray node of the leader's cluster.

    It serves no HTTP, so it has no probes (readiness is the leader's, which waits for every
    worker) and no preStop delay (no Service routes to it). customCommand and customArgs are for
    the leader's `nimctl serve`.
    """
    container = _image_fields(spec)
    container["command"] = ["nimctl", "worker"]
    container["env"] = env
    container["resources"] = _resources(spec, gpus)
    container["volumeMounts"] = _volume_mounts(spec, settings)
    if spec.containerSecurityContext:
        container["securityContext"] = dict(spec.containerSecurityContext)
    return container


def download_container(
    spec: Values, settings: NimSettings, env: list[dict[str, Any]], profile: str
) -> dict[str, Any]:
    """`nimctl download` in the serving image: the cache volume only, no GPU, no port.

    The CPU resources of the values apply (a download needs a core and little memory, not the
    serving pod's GPUs); customCommand and customArgs are for `nimctl serve`.
    """
    container = _image_fields(spec)
    container["command"] = ["nimctl", "download", "--profile", profile]
    container["env"] = env
    resources = _resources(spec, 0)
    if resources:
        container["resources"] = resources
    container["volumeMounts"] = [{"name": "cache", "mountPath": str(settings.cache_path)}]
    if spec.containerSecurityContext:
        container["securityContext"] = dict(spec.containerSecurityContext)
    return container


def _image_fields(spec: Values) -> dict[str, Any]:
    return {
        "name": CONTAINER_NAME,
        "image": f"{spec.image.repository}:{spec.image.tag or __version__}",
        "imagePullPolicy": spec.image.pullPolicy,
    }


def _volume_mounts(spec: Values, settings: NimSettings) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "cache", "mountPath": str(settings.cache_path)},
    ]
    if spec.apiKeySecret.secretName:  # workers too: their settings name the file as well
        mounts.append({"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True})
    return mounts


def tls_enabled(settings: NimSettings) -> bool:
    return settings.ssl_mode != "DISABLED"


def _probe(probe: ProbeValues | StartupProbeValues, failures: int, scheme: str) -> dict[str, Any]:
    return {
        "httpGet": {"path": probe.path, "port": PORT_NAME, "scheme": scheme},
        "initialDelaySeconds": probe.initialDelaySeconds,
        "timeoutSeconds": probe.timeoutSeconds,
        "periodSeconds": probe.periodSeconds,
        "successThreshold": probe.successThreshold,
        "failureThreshold": failures,
    }


def _resources(spec: Values, gpus: int) -> dict[str, Any]:
    chosen = spec.resources.gpu if gpus else spec.resources.cpu
    key = "resources.gpu" if gpus else "resources.cpu"
    for part in ("requests", "limits"):
        if GPU_RESOURCE in getattr(chosen, part):
            raise ConfigError(
                f"invalid values {key}.{part}.{GPU_RESOURCE}: the profile sets the GPU count "
                f"({gpus}); use NIM_TENSOR_PARALLEL_SIZE / NIM_PIPELINE_PARALLEL_SIZE in env"
            )
    out: dict[str, Any] = {}
    if chosen.requests:
        out["requests"] = dict(chosen.requests)
    limits = dict(chosen.limits)
    if gpus:
        limits[GPU_RESOURCE] = gpus
    if limits:
        out["limits"] = limits
    return out


# --- sizes ---------------------------------------------------------------------------------------


def shm_quantity(profile: Profile) -> str:
    """The profile's shm_size as a Kubernetes quantity.

    Docker reads `--shm-size=32GB` in binary units (32 GiB), and the profiles copy NIM's docker
    commands, so GB -> Gi and MB -> Mi keep the same number of bytes.
    """
    match = re.fullmatch(r"([0-9]+)(GB|GiB|MB|MiB)", profile.shm_size)
    if match is None:  # the Profile model's pattern makes this unreachable
        raise ConfigError(f"profile {profile.name}: shm_size {profile.shm_size!r} is not a size")
    number, unit = match.groups()
    return f"{number}{'Gi' if unit.startswith('G') else 'Mi'}"


def cache_size(profile: Profile, floor: str) -> str:
    """The claim's request: the floor, or the weights plus 10 % in 10 Gi steps if larger."""
    need_gib = math.ceil(profile.hardware.weights_gib * 1.1 / 10) * 10
    if need_gib * 2**30 > _quantity_bytes(floor, "persistence.size"):
        return f"{need_gib}Gi"
    return floor


def _quantity_bytes(value: str, key: str) -> float:
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise ConfigError(
            f"invalid values {key}={value!r}: not a Kubernetes quantity (5, 500m, 50Gi)"
        )
    number, unit = match.groups()
    return float(number) * _UNITS[unit]


def container_env(spec: Values, profile: Profile, profile_id: str) -> list[dict[str, Any]]:
    """NIM_MODEL_PROFILE, then env (as strings), the secret references and extraEnv."""
    for name in _PROFILE_OWNED_ENV:
        if name in spec.env:
            raise ConfigError(f"invalid values env.{name}: it is set from the profile rendered")
    unknown = unknown_nim_variables(spec.env)
    if unknown:
        raise ConfigError(
            f"invalid values env.{unknown[0]}: not a nimctl setting (docs/configuration.md)"
        )
    env: list[dict[str, Any]] = [
        {"name": "NIM_MODEL_PROFILE", "value": profile_id if spec.pinProfileId else profile.name}
    ]
    env += [{"name": name, "value": _env_string(value)} for name, value in spec.env.items()]
    for name, ref in spec.secretEnv.items():
        if ref.secretName:
            env.append(
                {
                    "name": name,
                    "valueFrom": {"secretKeyRef": {"name": ref.secretName, "key": ref.key}},
                }
            )
    if spec.apiKeySecret.secretName:
        key_file = f"{API_KEYS_DIR}/{spec.apiKeySecret.key}"
        env.append({"name": "NIM_API_KEY_FILE", "value": key_file})
    env += [dict(item) for item in spec.extraEnv]
    seen: set[str] = set()
    for item in env:
        item_name = item.get("name")
        if not isinstance(item_name, str) or not item_name:
            raise ConfigError("invalid values extraEnv: every entry needs a name")
        if item_name in seen:
            raise ConfigError(
                f"invalid values: {item_name} is set twice (env, secretEnv, apiKeySecret, extraEnv)"
            )
        seen.add(item_name)
    for name, key in _MULTI_NODE_ENV.items():
        if name in seen:
            where = f"env.{name}" if name in spec.env else name
            raise ConfigError(f"invalid values {where}: rendered from the profile; set {key}")
    return env


def _env_string(value: str | int | float | bool) -> str:
    if isinstance(value, bool):  # nimctl's settings read 1/0
        return "1" if value else "0"
    return str(value)


def check_values(spec: Values, settings: NimSettings) -> None:
    """What the values and the pod's settings must agree on (both validated on their own)."""
    cache = str(settings.cache_path)
    if not PurePosixPath(cache).is_absolute():  # the pod's home is not known here
        raise ConfigError(
            f"invalid values env.NIM_CACHE_PATH={cache!r}: an absolute path is needed"
        )
    grace = settings.shutdown_grace_period
    needed = spec.preStopSleepSeconds + grace + ENGINE_STOP_MARGIN_S
    if spec.terminationGracePeriodSeconds < needed:
        raise ConfigError(
            f"invalid values terminationGracePeriodSeconds={spec.terminationGracePeriodSeconds}:"
            f" must be at least preStopSleepSeconds ({spec.preStopSleepSeconds}) + "
            f"NIM_SHUTDOWN_GRACE_PERIOD ({grace:g}) + {ENGINE_STOP_MARGIN_S} s for the engine "
            f"to stop = {needed:g}"
        )
    probes = {
        key: getattr(spec, key) for key in ("livenessProbe", "readinessProbe", "startupProbe")
    }
    enabled = [key for key, probe in probes.items() if probe.enabled]
    if settings.ssl_mode == "MTLS" and enabled:
        raise ConfigError(
            f"invalid values {enabled[0]}.enabled: with env.NIM_SSL_MODE=MTLS nimctl requires "
            "client certificates, which the kubelet's HTTPS probes do not present; use TLS or "
            "set enabled: false on every probe"
        )
    for key in ("livenessProbe", "startupProbe"):
        probe: ProbeValues | StartupProbeValues = getattr(spec, key)
        if probe.successThreshold != 1:
            raise ConfigError(
                f"invalid values {key}.successThreshold={probe.successThreshold}: "
                "Kubernetes requires 1 for liveness and startup probes"
            )
    auto = spec.autoscaling
    if auto.maxReplicas < auto.minReplicas:
        raise ConfigError(
            f"invalid values autoscaling.maxReplicas={auto.maxReplicas}: below "
            f"autoscaling.minReplicas ({auto.minReplicas})"
        )
    _quantity_bytes(str(auto.averageValue), "autoscaling.averageValue")
    _quantity_bytes(spec.persistence.size, "persistence.size")
