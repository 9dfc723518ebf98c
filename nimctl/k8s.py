"""Kubernetes manifests for a model profile, rendered by nimctl itself instead of a Helm chart.

A profile already knows what its pod needs (GPUs, /dev/shm, the size of its weights), so the
manifests are computed from it plus a values file whose keys mirror NVIDIA's nim-llm chart. Plain
objects out of Python need no Helm binary or template language, and the values are validated
with one-line errors that name the key, before anything reaches a cluster. A profile spread over
several machines (hardware.nodes, or values multiNode) gets a LeaderWorkerSet instead of the
Deployment: one leader pod serving HTTP and the engine, and worker pods joining its Ray cluster.

    objects = render_manifests(profile, profile_id, load_values(path), release=..., namespace=...)
    print(dump_yaml(objects), end="")
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nimctl import __version__
from nimctl.errors import ConfigError
from nimctl.profiles import Profile, apply_settings
from nimctl.settings import NimSettings, settings_for_pod, unknown_nim_variables

APP_NAME = "nimctl"
PORT_NAME = "http-openai"
GPU_RESOURCE = "nvidia.com/gpu"
PROFILE_LABEL = "nimctl.dev/profile"
PROFILE_ID_ANNOTATION = "nimctl.dev/profile-id"
CONTAINER_NAME = "nimctl"
RAY_PORT_NAME = "ray"
LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
# The label LeaderWorkerSet gives every pod of a group: "0" is the leader.
LWS_WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
# Appended to the release: LeaderWorkerSet creates a headless Service named after itself (the
# workers' route to the leader), which must not collide with the release's own Service.
LWS_SUFFIX = "-lws"
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
# A StatefulSet's pods carry the label controller-revision-hash=<name>-<10-character hash>, at
# most 63 characters: LeaderWorkerSet's StatefulSets (<lws> and <lws>-<group>) stay within 52.
_STATEFULSET_NAME_MAX = 52
# Same syntax as Prometheus durations (the ServiceMonitor CRD's pattern).
_DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
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
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_RELEASE_MAX = 53  # Helm's limit: room for suffixes such as "-cache" within 63 characters.
_NUMBER_LIKE = re.compile(r"[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_UNION_MEMBERS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


# Values model: every key is required, because deploy/values.yaml supplies the defaults; strict,
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


class ProbeValues(_Closed):
    enabled: bool
    path: str = Field(pattern=r"^/")
    initialDelaySeconds: int = Field(ge=0)
    timeoutSeconds: int = Field(ge=1)
    periodSeconds: int = Field(ge=1)
    successThreshold: int = Field(ge=1)
    failureThreshold: int = Field(ge=1)


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
    """deploy/values.yaml, validated; docs/deployment.md explains each key."""

    image: ImageValues
    imagePullSecrets: list[dict[str, str]]
    replicaCount: int = Field(ge=0)
    customCommand: list[str]
    customArgs: list[str]
    env: dict[str, str | int | float | bool]
    pinProfileId: bool
    extraEnv: list[dict[str, Any]]
    secretEnv: dict[str, SecretRef]
    service: ServiceValues
    livenessProbe: ProbeValues
    readinessProbe: ProbeValues
    startupProbe: ProbeValues
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
    """deploy/values.yaml: packaged in the wheel as nimctl/deploy/, or in a source checkout."""
    packaged = Path(str(resources.files("nimctl"))) / "deploy" / "values.yaml"
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parent.parent / "deploy" / "values.yaml"


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
        raise ConfigError(f"invalid values: {_describe(exc)}") from None


def default_release(profile: Profile) -> str:
    """A release name from the profile's: a DNS label (profile names may hold dots)."""
    name = re.sub(r"[^a-z0-9-]+", "-", profile.name.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"nim-{name}"
    return name[:_RELEASE_MAX].rstrip("-")


def render_manifests(
    profile: Profile,
    profile_id: str,
    values: Mapping[str, Any],
    *,
    release: str | None = None,
    namespace: str | None = None,
) -> list[dict[str, Any]]:
    """Deployment, Service, PVC, ServiceMonitor and HPA for one profile, as Kubernetes objects.

    A profile on more than one node gets a LeaderWorkerSet (named <release>-lws) in place of
    the Deployment. `values` is complete, as load_values returns it (merging again over the
    defaults would bring back keys the user deleted with null). `release` names every object
    (default: from the profile name); `namespace` None leaves the namespace to kubectl.
    """
    spec = validate_values(values)
    release = release or default_release(profile)
    _check_names(profile, release, namespace)
    env = _container_env(spec, profile, profile_id)
    # The pods' own settings and profile, validated as `nimctl serve` will in each of them.
    settings = settings_for_pod({e["name"]: e["value"] for e in env if "value" in e})
    try:
        gpus = apply_settings(profile, settings).hardware.gpus
    except ConfigError as exc:
        raise ConfigError(f"invalid values env: {exc}") from None
    _check_values(spec)
    nodes = _nodes(spec, profile, gpus)

    if nodes > 1:
        _check_multi_node(spec, release)
        workload = _leader_worker_set(
            spec, profile, profile_id, release, namespace, env, gpus, nodes
        )
    else:
        workload = _deployment(spec, profile, profile_id, release, namespace, env, gpus)
    objects = [workload]
    objects.append(_service(spec, profile, release, namespace, leaders_only=nodes > 1))
    claim = _claim(spec, profile, release, namespace, nodes)
    if claim is not None:
        objects.append(claim)
    if spec.metrics.serviceMonitor.enabled:
        objects.append(_service_monitor(spec, profile, release, namespace))
    if spec.autoscaling.enabled:
        objects.append(_autoscaler(spec, profile, release, namespace, workload))
    return objects


def dump_yaml(objects: Sequence[Mapping[str, Any]]) -> str:
    """Multi-document YAML in the objects' own key order, without anchors, for kubectl apply."""
    return yaml.dump_all(
        [dict(obj) for obj in objects],
        Dumper=_PlainDumper,
        sort_keys=False,
        explicit_start=True,
        default_flow_style=False,
        width=1000,
        allow_unicode=True,
    )


class _PlainDumper(yaml.SafeDumper):
    """kubectl accepts anchors, but a reader diffing two renders should not meet &id001."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def represent_str(self, data: str) -> yaml.ScalarNode:
        # PyYAML leaves "123e4567" plain (not a float in YAML 1.1), but kubectl's parser reads
        # it as a number: quote anything numeric-looking, such as a profile id could be.
        if _NUMBER_LIKE.fullmatch(data):
            return self.represent_scalar("tag:yaml.org,2002:str", data, style="'")
        return super().represent_str(data)


_PlainDumper.add_representer(str, _PlainDumper.represent_str)


# --- objects -------------------------------------------------------------------------------------


def _selector(release: str) -> dict[str, str]:
    # Immutable in a Deployment: nothing here may change when the profile does.
    return {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": release}


def _labels(profile: Profile, release: str) -> dict[str, str]:
    return {
        **_selector(release),
        "app.kubernetes.io/version": __version__,
        "app.kubernetes.io/managed-by": APP_NAME,
        PROFILE_LABEL: profile.name,
    }


def _metadata(
    name: str,
    namespace: str | None,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _deployment(
    spec: Values,
    profile: Profile,
    profile_id: str,
    release: str,
    namespace: str | None,
    env: list[dict[str, Any]],
    gpus: int,
) -> dict[str, Any]:
    labels = _labels(profile, release)
    id_annotation = {PROFILE_ID_ANNOTATION: profile_id}
    deployment_spec: dict[str, Any] = {}
    if not spec.autoscaling.enabled:
        # With an HPA, a replica count here would reset its choice on every apply.
        deployment_spec["replicas"] = spec.replicaCount
    deployment_spec["selector"] = {"matchLabels": _selector(release)}
    deployment_spec["strategy"] = _strategy(spec)
    deployment_spec["progressDeadlineSeconds"] = spec.progressDeadlineSeconds
    deployment_spec["template"] = {
        "metadata": _template_metadata(spec, labels, id_annotation),
        "spec": _pod_spec(
            spec,
            profile,
            _container(spec, env, gpus),
            gpus,
            _cache_source(spec, profile, release, nodes=1),
        ),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(release, namespace, labels, id_annotation),
        "spec": deployment_spec,
    }


def _template_metadata(
    spec: Values, labels: Mapping[str, str], id_annotation: Mapping[str, str]
) -> dict[str, Any]:
    return {
        "labels": {**spec.podLabels, **labels},
        # A changed profile id changes the template, so the pods are replaced.
        "annotations": {**spec.podAnnotations, **id_annotation},
    }


def lws_name(release: str) -> str:
    return f"{release}{LWS_SUFFIX}"


def _leader_worker_set(
    spec: Values,
    profile: Profile,
    profile_id: str,
    release: str,
    namespace: str | None,
    env: list[dict[str, Any]],
    gpus: int,
    nodes: int,
) -> dict[str, Any]:
    """The Deployment's counterpart when the profile's GPUs are spread over several machines.

    One group per replica: a leader pod (`nimctl serve`: HTTP, the Ray head, the engine) and
    nodes - 1 worker pods (`nimctl worker`: Ray nodes), each holding gpus / nodes GPUs.
    """
    labels = _labels(profile, release)
    id_annotation = {PROFILE_ID_ANNOTATION: profile_id}
    per_node = gpus // nodes
    # Both roles read them: the worker checks its share of the profile and waits as long.
    env = [
        env[0],  # NIM_MODEL_PROFILE
        {"name": "NIM_NUM_COMPUTE_NODES", "value": str(nodes)},
        {"name": "NIM_CLUSTER_START_TIMEOUT", "value": str(spec.multiNode.clusterStartTimeout)},
        *env[1:],
    ]
    ray_port = {"name": RAY_PORT_NAME, "containerPort": _ray_port(spec.env), "protocol": "TCP"}
    leader = _container(spec, env, per_node, extra_ports=[ray_port])
    worker = _worker_container(spec, copy.deepcopy(env), per_node)
    lws_spec: dict[str, Any] = {}
    if not spec.autoscaling.enabled:
        # With an HPA, a replica count here would reset its choice on every apply.
        lws_spec["replicas"] = spec.replicaCount
    # Not LeaderReady: the leader is ready only once every worker has joined its Ray cluster.
    lws_spec["startupPolicy"] = "LeaderCreated"
    # One group at a time and no surge group: a second set of free GPU nodes is rare.
    lws_spec["rolloutStrategy"] = {
        "type": "RollingUpdate",
        "rollingUpdateConfiguration": {"maxUnavailable": 1, "maxSurge": 0},
    }
    lws_spec["leaderWorkerTemplate"] = {
        "size": nodes,
        # vLLM's engine does not survive a lost Ray node: the whole group starts again.
        "restartPolicy": "RecreateGroupOnPodRestart",
        "leaderTemplate": {
            "metadata": _template_metadata(spec, labels, id_annotation),
            "spec": _pod_spec(
                spec, profile, leader, per_node, _cache_source(spec, profile, release, nodes)
            ),
        },
        "workerTemplate": {
            "metadata": _template_metadata(spec, labels, id_annotation),
            "spec": _pod_spec(
                spec, profile, worker, per_node, _cache_source(spec, profile, release, nodes)
            ),
        },
    }
    return {
        "apiVersion": LWS_API_VERSION,
        "kind": "LeaderWorkerSet",
        "metadata": _metadata(lws_name(release), namespace, labels, id_annotation),
        "spec": lws_spec,
    }


def _strategy(spec: Values) -> dict[str, Any]:
    if spec.strategy:
        return dict(spec.strategy)
    if spec.persistence.enabled and spec.persistence.accessMode != "ReadWriteMany":
        # A surge pod would need the claim (and a second set of GPUs) the old pod holds.
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def _pod_spec(
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


def _container(
    spec: Values,
    env: list[dict[str, Any]],
    gpus: int,
    extra_ports: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    port = int(spec.env["NIM_SERVER_PORT"])
    container = _image_fields(spec)
    if spec.customCommand:
        container["command"] = list(spec.customCommand)
    if spec.customArgs:
        container["args"] = list(spec.customArgs)
    container["env"] = env
    container["ports"] = [{"name": PORT_NAME, "containerPort": port, "protocol": "TCP"}]
    container["ports"] += [dict(p) for p in extra_ports]
    container["resources"] = _resources(spec, gpus)
    container["volumeMounts"] = _volume_mounts(spec)
    scheme = "HTTPS" if _tls(spec) else "HTTP"
    for key, probe in (
        ("startupProbe", spec.startupProbe),
        ("livenessProbe", spec.livenessProbe),
        ("readinessProbe", spec.readinessProbe),
    ):
        if probe.enabled:
            container[key] = _probe(probe, scheme)
    if spec.preStopSleepSeconds:
        # An exec hook rather than lifecycle.sleep, which needs Kubernetes 1.30+ feature gates.
        container["lifecycle"] = {
            "preStop": {"exec": {"command": ["sleep", str(spec.preStopSleepSeconds)]}}
        }
    if spec.containerSecurityContext:
        container["securityContext"] = dict(spec.containerSecurityContext)
    return container


def _worker_container(spec: Values, env: list[dict[str, Any]], gpus: int) -> dict[str, Any]:
    """`nimctl worker`: a Ray node of the leader's cluster.

    It serves no HTTP, so it has no probes (readiness is the leader's, which waits for every
    worker) and no preStop delay (no Service routes to it). customCommand and customArgs are for
    the leader's `nimctl serve`.
    """
    container = _image_fields(spec)
    container["command"] = ["nimctl", "worker"]
    container["env"] = env
    container["resources"] = _resources(spec, gpus)
    container["volumeMounts"] = _volume_mounts(spec)
    if spec.containerSecurityContext:
        container["securityContext"] = dict(spec.containerSecurityContext)
    return container


def _image_fields(spec: Values) -> dict[str, Any]:
    return {
        "name": CONTAINER_NAME,
        "image": f"{spec.image.repository}:{spec.image.tag or __version__}",
        "imagePullPolicy": spec.image.pullPolicy,
    }


def _volume_mounts(spec: Values) -> list[dict[str, Any]]:
    return [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "cache", "mountPath": str(spec.env["NIM_CACHE_PATH"])},
    ]


def _tls(spec: Values) -> bool:
    return str(spec.env.get("NIM_SSL_MODE", "")).upper() in {"TLS", "MTLS"}


def _probe(probe: ProbeValues, scheme: str) -> dict[str, Any]:
    return {
        "httpGet": {"path": probe.path, "port": PORT_NAME, "scheme": scheme},
        "initialDelaySeconds": probe.initialDelaySeconds,
        "timeoutSeconds": probe.timeoutSeconds,
        "periodSeconds": probe.periodSeconds,
        "successThreshold": probe.successThreshold,
        "failureThreshold": probe.failureThreshold,
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


def _cache_source(spec: Values, profile: Profile, release: str, nodes: int) -> dict[str, Any]:
    persistence = spec.persistence
    if not persistence.enabled:
        return {"emptyDir": {}}
    if _per_pod_cache(spec, nodes):
        return {"ephemeral": {"volumeClaimTemplate": _per_pod_claim(spec, profile, release)}}
    return {
        "persistentVolumeClaim": {"claimName": persistence.existingClaim or claim_name(release)}
    }


def _per_pod_cache(spec: Values, nodes: int) -> bool:
    """Multi-node pods run on several machines, which cannot all mount one ReadWriteOnce claim.

    Then each pod gets a claim of its own, created and deleted with it (a generic ephemeral
    volume): sized for the weights from the storage class, where an emptyDir would fill the
    node's disk with hundreds of GiB. A ReadWriteMany claim (or an existing claim, which must be
    one) is shared by every pod instead, and the weights are downloaded once.
    """
    persistence = spec.persistence
    return (
        nodes > 1
        and persistence.enabled
        and not persistence.existingClaim
        and persistence.accessMode != "ReadWriteMany"
    )


def claim_name(release: str) -> str:
    return f"{release}-cache"


def _claim(
    spec: Values, profile: Profile, release: str, namespace: str | None, nodes: int
) -> dict[str, Any] | None:
    persistence = spec.persistence
    if not persistence.enabled or persistence.existingClaim or _per_pod_cache(spec, nodes):
        return None
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(
            claim_name(release), namespace, _labels(profile, release), persistence.annotations
        ),
        "spec": _claim_spec(spec, profile),
    }


def _per_pod_claim(spec: Values, profile: Profile, release: str) -> dict[str, Any]:
    # Kubernetes names each claim <pod>-cache, and deletes it with the pod.
    metadata: dict[str, Any] = {"labels": _labels(profile, release)}
    if spec.persistence.annotations:
        metadata["annotations"] = dict(spec.persistence.annotations)
    return {"metadata": metadata, "spec": _claim_spec(spec, profile)}


def _claim_spec(spec: Values, profile: Profile) -> dict[str, Any]:
    persistence = spec.persistence
    claim_spec: dict[str, Any] = {"accessModes": [persistence.accessMode]}
    if persistence.storageClass == "-":
        claim_spec["storageClassName"] = ""
    elif persistence.storageClass:
        claim_spec["storageClassName"] = persistence.storageClass
    claim_spec["resources"] = {"requests": {"storage": cache_size(profile, persistence.size)}}
    return claim_spec


def _service(
    spec: Values, profile: Profile, release: str, namespace: str | None, *, leaders_only: bool
) -> dict[str, Any]:
    labels = {**spec.service.labels, **_labels(profile, release)}
    selector = _selector(release)
    if leaders_only:
        # Workers carry the same labels but serve no HTTP: route to the leaders only.
        selector[LWS_WORKER_INDEX_LABEL] = "0"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(release, namespace, labels, spec.service.annotations),
        "spec": {
            "type": spec.service.type,
            "selector": selector,
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": spec.service.port,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def _service_monitor(
    spec: Values, profile: Profile, release: str, namespace: str | None
) -> dict[str, Any]:
    monitor = spec.metrics.serviceMonitor
    endpoint: dict[str, Any] = {"port": monitor.port, "path": monitor.path}
    endpoint["interval"] = monitor.interval
    if _tls(spec):
        endpoint["scheme"] = "https"
    if monitor.tlsConfig:
        endpoint["tlsConfig"] = dict(monitor.tlsConfig)
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(
            release, namespace, {**monitor.additionalLabels, **_labels(profile, release)}
        ),
        "spec": {"selector": {"matchLabels": _selector(release)}, "endpoints": [endpoint]},
    }


def _autoscaler(
    spec: Values,
    profile: Profile,
    release: str,
    namespace: str | None,
    workload: Mapping[str, Any],
) -> dict[str, Any]:
    """An HPA on the workload, the Deployment or the LeaderWorkerSet.

    A LeaderWorkerSet scales by whole groups, and its scale subresource selects the leader
    pods: the ones that serve the metrics.
    """
    auto = spec.autoscaling
    metrics = [dict(m) for m in auto.metrics] or [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": auto.metric},
                "target": {"type": "AverageValue", "averageValue": str(auto.averageValue)},
            },
        }
    ]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(release, namespace, _labels(profile, release)),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": workload["apiVersion"],
                "kind": workload["kind"],
                "name": workload["metadata"]["name"],
            },
            "minReplicas": auto.minReplicas,
            "maxReplicas": auto.maxReplicas,
            "metrics": metrics,
            "behavior": {
                "scaleDown": {"stabilizationWindowSeconds": auto.scaleDownStabilizationSeconds}
            },
        },
    }


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


# --- checks --------------------------------------------------------------------------------------


def _check_names(profile: Profile, release: str, namespace: str | None) -> None:
    if len(release) > _RELEASE_MAX or not _DNS_LABEL.fullmatch(release):
        raise ConfigError(
            f"invalid release {release!r}: lower-case letters, digits and '-', starting with a "
            f"letter, at most {_RELEASE_MAX} characters"
        )
    if namespace is not None and (len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace)):
        raise ConfigError(f"invalid namespace {namespace!r}: not a DNS label")
    if len(profile.name) > 63 or not _LABEL_VALUE.fullmatch(profile.name):
        raise ConfigError(f"profile name {profile.name!r} cannot be a label value (63 characters)")


def _container_env(spec: Values, profile: Profile, profile_id: str) -> list[dict[str, Any]]:
    """NIM_MODEL_PROFILE, then env (as strings), the secret references and extraEnv."""
    for name in _PROFILE_OWNED_ENV:
        if name in spec.env:
            raise ConfigError(f"invalid values env.{name}: it is set from the profile rendered")
    unknown = unknown_nim_variables(spec.env)
    if unknown:
        raise ConfigError(
            f"invalid values env.{unknown[0]}: not a nimctl setting (docs/configuration.md)"
        )
    _port(spec.env)
    cache = str(spec.env.get("NIM_CACHE_PATH", ""))
    if not PurePosixPath(cache).is_absolute():
        raise ConfigError(
            f"invalid values env.NIM_CACHE_PATH={cache!r}: an absolute path is needed"
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
    env += [dict(item) for item in spec.extraEnv]
    seen: set[str] = set()
    for item in env:
        item_name = item.get("name")
        if not isinstance(item_name, str) or not item_name:
            raise ConfigError("invalid values extraEnv: every entry needs a name")
        if item_name in seen:
            raise ConfigError(
                f"invalid values: {item_name} is set twice (env, secretEnv, extraEnv)"
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


def _port(env: Mapping[str, Any], name: str = "NIM_SERVER_PORT", default: Any = None) -> int:
    raw = env.get(name, default)
    try:
        port = int(str(raw))
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ConfigError(f"invalid values env.{name}={raw!r}: a port 1-65535 is needed")
    return port


def _ray_port(env: Mapping[str, Any]) -> int:
    return _port(env, "NIM_RAY_PORT", NimSettings.model_fields["ray_port"].default)


def _nodes(spec: Values, profile: Profile, gpus: int) -> int:
    """Machines per replica: multiNode.nodes when enabled and set, else the profile's."""
    multi = spec.multiNode
    if multi.nodes is not None and not multi.enabled:
        raise ConfigError(
            f"invalid values multiNode.nodes={multi.nodes}: set multiNode.enabled: true as well"
        )
    if multi.enabled and multi.nodes is not None:
        nodes, key = multi.nodes, f"multiNode.nodes={multi.nodes}"
    else:
        nodes, key = profile.hardware.nodes, "multiNode.enabled"
    if multi.enabled and nodes < 2:
        raise ConfigError(
            f"invalid values {key}: multi-node needs 2 or more nodes (profile {profile.name} "
            f"has {profile.hardware.nodes}); set multiNode.nodes"
        )
    if nodes > 1 and not gpus:
        raise ConfigError(
            f"invalid values {key}: profile {profile.name} runs on CPU; only GPU profiles are "
            "spread over several nodes"
        )
    if nodes > 1 and gpus % nodes:
        if multi.nodes is None:  # the profile's count, so env changed the GPUs
            key = "env.NIM_TENSOR_PARALLEL_SIZE / NIM_PIPELINE_PARALLEL_SIZE"
        raise ConfigError(
            f"invalid values {key}: {gpus} GPUs (tensor x pipeline parallel size) cannot be "
            f"spread evenly over {nodes} nodes; every node holds the same number"
        )
    return nodes


def _check_multi_node(spec: Values, release: str) -> None:
    """What a LeaderWorkerSet needs beyond what a Deployment does."""
    if spec.strategy:
        raise ConfigError(
            "invalid values strategy: a Deployment's; a LeaderWorkerSet replaces one group at a "
            "time (set strategy: {} with multi-node profiles)"
        )
    backend = spec.env.get("NIM_DISTRIBUTED_EXECUTOR_BACKEND")
    if backend is not None and str(backend) != "ray":
        raise ConfigError(
            f"invalid values env.NIM_DISTRIBUTED_EXECUTOR_BACKEND={backend!r}: more than one "
            "node needs vLLM's Ray executor (ray)"
        )
    if _ray_port(spec.env) == _port(spec.env):
        raise ConfigError(
            f"invalid values env.NIM_RAY_PORT={_ray_port(spec.env)}: NIM_SERVER_PORT uses it"
        )
    startup = spec.startupProbe
    window = startup.initialDelaySeconds + startup.periodSeconds * startup.failureThreshold
    timeout = spec.multiNode.clusterStartTimeout
    if startup.enabled and window <= timeout:
        raise ConfigError(
            f"invalid values multiNode.clusterStartTimeout={timeout}: the leader's startup "
            f"probe gives up after {window} s (startupProbe.initialDelaySeconds + periodSeconds "
            "x failureThreshold), before the engine could even load"
        )
    auto = spec.autoscaling
    groups = max(spec.replicaCount, auto.maxReplicas if auto.enabled else 0, 1)
    longest = f"{lws_name(release)}-{groups - 1}"  # the last group's worker StatefulSet
    if len(longest) > _STATEFULSET_NAME_MAX:
        limit = _STATEFULSET_NAME_MAX - len(longest) + len(release)
        raise ConfigError(
            f"invalid release {release!r}: at most {limit} characters for a LeaderWorkerSet of "
            f"{groups} group(s) (its StatefulSets are named <release>{LWS_SUFFIX}-<group>, at "
            f"most {_STATEFULSET_NAME_MAX} characters)"
        )


def _check_values(spec: Values) -> None:
    raw = spec.env.get(
        "NIM_SHUTDOWN_GRACE_PERIOD", NimSettings.model_fields["shutdown_grace_period"].default
    )
    try:
        grace = float(str(raw))
    except ValueError:
        raise ConfigError(
            f"invalid values env.NIM_SHUTDOWN_GRACE_PERIOD={raw!r}: seconds are needed"
        ) from None
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
    if str(spec.env.get("NIM_SSL_MODE", "")).upper() == "MTLS" and enabled:
        raise ConfigError(
            f"invalid values {enabled[0]}.enabled: with env.NIM_SSL_MODE=MTLS nimctl requires "
            "client certificates, which the kubelet's HTTPS probes do not present; use TLS or "
            "set enabled: false on every probe"
        )
    for key in ("livenessProbe", "startupProbe"):
        probe: ProbeValues = getattr(spec, key)
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
    # A union reports once per member (loc ends in "str", "int", ...): merge those into one.
    found: dict[str, tuple[str, list[str]]] = {}
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        member = _UNION_MEMBERS.get(loc[-1]) if loc else None
        if member:
            loc.pop()
        key = ".".join(loc) or "values"
        if err["type"] == "extra_forbidden":
            head, message = key, "unknown key (deploy/values.yaml lists the keys)"
        elif err["type"] == "missing":
            head, message = key, "missing"
        else:
            head, message = f"{key}={err.get('input')!r}", member or err["msg"]
        found.setdefault(key, (head, []))[1].append(message)
    parts = []
    for head, messages in found.values():
        if all(m in _UNION_MEMBERS.values() for m in messages):
            *rest, last = messages
            text = f"should be a {', '.join(rest)} or {last}" if rest else f"should be a {last}"
        else:
            text = "; ".join(messages)
        parts.append(f"{head}: {text}")
    return "; ".join(parts)
