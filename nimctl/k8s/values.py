"""The values file of `nimctl k8s`: its model (keys mirror NVIDIA's nim-llm chart), the
defaults shipped in `nimctl/k8s/values.yaml`, merging and one-line validation errors."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nimctl.errors import ConfigError
from nimctl.validation_errors import describe, key_path

# Same syntax as Prometheus durations (the ServiceMonitor CRD's pattern).
_DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
NUMBER_LIKE = re.compile(r"[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


# Values model: every key is required, because nimctl/k8s/values.yaml supplies the defaults; strict,
# so that `tag: 1.0` (a float) or `replicaCount: "2"` is reported instead of guessed at.
class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ImageValues(_Closed):
    repository: str = Field(min_length=1)
    tag: str
    pullPolicy: Literal["Always", "IfNotPresent", "Never"]


class SecretRef(_Closed):
    secretName: str
    key: str = Field(min_length=1)


class ServiceValues(_Closed):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"]
    port: int = Field(ge=1, le=65535)
    annotations: dict[str, str]
    labels: dict[str, str]


class _Probe(_Closed):
    enabled: bool
    path: str = Field(pattern=r"^/")
    initialDelaySeconds: int = Field(ge=0)
    timeoutSeconds: int = Field(ge=1)
    periodSeconds: int = Field(ge=1)
    successThreshold: int = Field(ge=1)


class ProbeValues(_Probe):
    failureThreshold: int = Field(ge=1)


class StartupProbeValues(_Probe):
    """failureThreshold absent (or null): derived from the profile's weight size at these
    rates (nimctl.k8s.startup)."""

    failureThreshold: int | None = Field(None, ge=1)
    downloadMBps: float = Field(gt=0)
    loadMBps: float = Field(gt=0)
    engineStartSeconds: int = Field(ge=0)


class PersistenceValues(_Closed):
    enabled: bool
    existingClaim: str
    storageClass: str
    accessMode: Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"]
    size: str
    annotations: dict[str, str]


class ResourceValues(_Closed):
    requests: dict[str, str | int | float]
    limits: dict[str, str | int | float]


class ResourcesValues(_Closed):
    gpu: ResourceValues
    cpu: ResourceValues


class ServiceMonitorValues(_Closed):
    enabled: bool
    interval: str = Field(pattern=_DURATION)
    path: str = Field(pattern=r"^/")
    port: Literal["http-openai"]
    tlsConfig: dict[str, Any]
    additionalLabels: dict[str, str]


class MetricsValues(_Closed):
    serviceMonitor: ServiceMonitorValues


class AutoscalingValues(_Closed):
    enabled: bool
    minReplicas: int = Field(ge=1)
    maxReplicas: int = Field(ge=1)
    metric: str = Field(min_length=1)
    averageValue: str | int = Field(union_mode="left_to_right")
    scaleDownStabilizationSeconds: int = Field(ge=0, le=3600)
    metrics: list[dict[str, Any]]


class MultiNodeValues(_Closed):
    enabled: bool
    # Not required: null is its meaning ("from the profile"), and null in a values file deletes.
    nodes: int | None = Field(None, ge=1)
    clusterStartTimeout: int = Field(ge=1)


class Values(_Closed):
    """nimctl/k8s/values.yaml, validated; docs/deployment.md explains each key."""

    image: ImageValues
    imagePullSecrets: list[dict[str, str]]
    replicaCount: int = Field(ge=0)
    customCommand: list[str]
    customArgs: list[str]
    env: dict[str, str | int | float | bool]
    pinProfileId: bool
    extraEnv: list[dict[str, Any]]
    secretEnv: dict[str, SecretRef]
    apiKeySecret: SecretRef
    service: ServiceValues
    livenessProbe: ProbeValues
    readinessProbe: ProbeValues
    startupProbe: StartupProbeValues
    persistence: PersistenceValues
    podSecurityContext: dict[str, Any]
    containerSecurityContext: dict[str, Any]
    terminationGracePeriodSeconds: int = Field(ge=0)
    preStopSleepSeconds: int = Field(ge=0)
    strategy: dict[str, Any]
    progressDeadlineSeconds: int = Field(ge=1)
    resources: ResourcesValues
    nodeSelector: dict[str, str]
    affinity: dict[str, Any]
    tolerations: list[dict[str, Any]]
    podAnnotations: dict[str, str]
    podLabels: dict[str, str]
    metrics: MetricsValues
    autoscaling: AutoscalingValues
    multiNode: MultiNodeValues


def default_values_path() -> Path:
    """The defaults, package data: a wheel and a checkout read the same file."""
    return Path(__file__).resolve().parent / "values.yaml"


def load_values(path: Path | None = None) -> dict[str, Any]:
    """The defaults with the user's file deep-merged over them; validated by render_manifests."""
    values = _read_mapping(default_values_path())
    if path is not None:
        values = merge_values(values, _read_mapping(path))
    return values


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge: mappings merge, anything else replaces, and None deletes the key."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = value
    return out


def validate_values(values: Mapping[str, Any]) -> Values:
    """The values as a model; ConfigError names every bad key on one line."""
    try:
        return Values.model_validate(dict(values))
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read values file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a values file must be a YAML mapping")
    return data


def _describe(exc: ValidationError) -> str:
    lines = describe(
        exc,
        lambda loc: f"values {key_path(loc)}" if loc else "values",
        unknown="unknown key (nimctl/k8s/values.yaml lists the keys)",
    )
    return "; ".join(f"invalid {line}" for line in lines)
