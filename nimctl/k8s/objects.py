"""The Kubernetes objects for one profile: Deployment or LeaderWorkerSet, Service, cache claim,
ServiceMonitor and autoscaler, named after the release; the YAML they are printed as."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from nimctl import __version__
from nimctl.config import pod_config
from nimctl.download import hub_model
from nimctl.errors import ConfigError
from nimctl.k8s.pod import (
    PORT_NAME,
    RAY_PORT_NAME,
    cache_size,
    check_values,
    container_env,
    download_container,
    main_container,
    pod_spec,
    tls_enabled,
    worker_container,
)
from nimctl.k8s.startup import startup_failure_threshold
from nimctl.k8s.values import NUMBER_LIKE, Values, validate_values
from nimctl.profiles import Profile
from nimctl.settings import NimSettings

APP_NAME = "nimctl"
PROFILE_LABEL = "nimctl.dev/profile"
PROFILE_ID_ANNOTATION = "nimctl.dev/profile-id"
LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
COMPONENT_LABEL = "app.kubernetes.io/component"
DOWNLOAD_APP_NAME = f"{APP_NAME}-download"
DOWNLOAD_SUFFIX = "-download"
# A failed download pod is replaced this many times; each fetches only what is still missing.
DOWNLOAD_JOB_RETRIES = 4
# Set on the serving pods when the Job is rendered: they start from the cache the Job fills.
DISABLE_DOWNLOAD = "NIM_DISABLE_MODEL_DOWNLOAD"
# The label LeaderWorkerSet gives every pod of a group: "0" is the leader.
LWS_WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
# Appended to the release: LeaderWorkerSet creates a headless Service named after itself (the
# workers' route to the leader), which must not collide with the release's own Service.
LWS_SUFFIX = "-lws"
# A StatefulSet's pods carry the label controller-revision-hash=<name>-<10-character hash>, at
# most 63 characters: LeaderWorkerSet's StatefulSets (<lws> and <lws>-<group>) stay within 52.
_STATEFULSET_NAME_MAX = 52
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_RELEASE_MAX = 53  # Helm's limit: room for suffixes such as "-cache" within 63 characters.
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


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
    download_job: bool = False,
) -> list[dict[str, Any]]:
    """Deployment, Service, PVC, ServiceMonitor and HPA for one profile, as Kubernetes objects.

    A profile on more than one node gets a LeaderWorkerSet (named <release>-lws) in place of
    the Deployment. `values` is complete, as load_values returns it (merging again over the
    defaults would bring back keys the user deleted with null). `release` names every object
    (default: from the profile name); `namespace` None leaves the namespace to kubectl.
    `download_job`: also a Job (<release>-download) that fills the cache claim with
    `nimctl download`, and the serving pods start offline (NIM_DISABLE_MODEL_DOWNLOAD=1).
    """
    spec = validate_values(values)
    release = release or default_release(profile)
    _check_names(profile, release, namespace)
    job_env = container_env(spec, profile, profile_id)
    env = job_env
    if download_job and all(e["name"] != DISABLE_DOWNLOAD for e in job_env):  # a set value wins
        env = [*job_env, {"name": DISABLE_DOWNLOAD, "value": "1"}]
    # The pods' own configuration, validated as `nimctl serve` will in each of them; what
    # follows reads it, not the variables' strings.
    pod = pod_config(profile, {e["name"]: e["value"] for e in env if "value" in e})
    settings, served = pod.settings, pod.profile
    gpus = served.hardware.gpus
    check_values(spec, settings)
    nodes = _nodes(spec, profile, gpus)
    # The pods download what the cache lacks, unless told not to (the Job fills it first).
    downloads = hub_model(served) is not None and not settings.disable_model_download
    startup_failures = startup_failure_threshold(
        spec.startupProbe,
        served.hardware.weights_gib,
        download=downloads,
        cluster_start_s=spec.multiNode.clusterStartTimeout if nodes > 1 else 0,
    )

    if nodes > 1:
        _check_multi_node(spec, settings, release, startup_failures)
        workload = _leader_worker_set(
            spec,
            settings,
            profile,
            profile_id,
            release,
            namespace,
            env,
            gpus,
            nodes,
            startup_failures,
        )
    else:
        workload = _deployment(
            spec, settings, profile, profile_id, release, namespace, env, gpus, startup_failures
        )
    objects = [workload]
    objects.append(_service(spec, profile, release, namespace, leaders_only=nodes > 1))
    claim = _claim(spec, profile, release, namespace, nodes)
    if claim is not None:
        objects.append(claim)
    if spec.metrics.serviceMonitor.enabled:
        objects.append(_service_monitor(spec, settings, profile, release, namespace))
    if spec.autoscaling.enabled:
        objects.append(_autoscaler(spec, profile, release, namespace, workload))
    if download_job:
        objects.append(_download_job(spec, settings, profile, release, namespace, job_env, nodes))
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
        if NUMBER_LIKE.fullmatch(data):
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
    settings: NimSettings,
    profile: Profile,
    profile_id: str,
    release: str,
    namespace: str | None,
    env: list[dict[str, Any]],
    gpus: int,
    startup_failures: int,
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
        "spec": pod_spec(
            spec,
            profile,
            main_container(spec, settings, env, gpus, startup_failures),
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
    settings: NimSettings,
    profile: Profile,
    profile_id: str,
    release: str,
    namespace: str | None,
    env: list[dict[str, Any]],
    gpus: int,
    nodes: int,
    startup_failures: int,
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
    ray = {"name": RAY_PORT_NAME, "containerPort": settings.ray_port, "protocol": "TCP"}
    leader = main_container(spec, settings, env, per_node, startup_failures, extra_ports=[ray])
    worker = worker_container(spec, settings, copy.deepcopy(env), per_node)
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
            "spec": pod_spec(
                spec, profile, leader, per_node, _cache_source(spec, profile, release, nodes)
            ),
        },
        "workerTemplate": {
            "metadata": _template_metadata(spec, labels, id_annotation),
            "spec": pod_spec(
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


# Serving settings that name files the Job does not mount (the key Secret, TLS files), which
# `nimctl download` would refuse to start without; a download needs none of them.
SERVING_ONLY_ENV = frozenset(
    {
        "NIM_API_KEY",
        "NIM_API_KEY_FILE",
        "NIM_SSL_MODE",
        "NIM_SSL_KEY_PATH",
        "NIM_SSL_CERT_PATH",
        "NIM_SSL_CA_CERTS_PATH",
    }
)


def download_job_name(release: str) -> str:
    return f"{release}{DOWNLOAD_SUFFIX}"


def _download_job(
    spec: Values,
    settings: NimSettings,
    profile: Profile,
    release: str,
    namespace: str | None,
    env: list[dict[str, Any]],
    nodes: int,
) -> dict[str, Any]:
    """`nimctl download` of the profile the pods serve, in their image, onto their cache claim.

    The serving pods' own environment (the profile pinned by NIM_MODEL_PROFILE, NIM_MODEL_PATH,
    HF_TOKEN from secretEnv...) but SERVING_ONLY_ENV, so the Job fetches exactly what they will
    look for. A failed
    attempt is retried in a new pod, which fetches only the files still missing.
    """
    persistence = spec.persistence
    if not persistence.enabled or _per_pod_cache(spec, nodes):
        raise ConfigError(
            "--download-job needs one cache claim the Job and the serving pods share: "
            "persistence.enabled true, and for a multi-node profile persistence.accessMode "
            "ReadWriteMany or persistence.existingClaim"
        )
    # Not the serving pods' selector: neither the Service nor the Deployment may take this pod.
    labels = {
        **_labels(profile, release),
        "app.kubernetes.io/name": DOWNLOAD_APP_NAME,
        COMPONENT_LABEL: "download",
    }
    env = [e for e in env if e["name"] not in SERVING_ONLY_ENV]
    selected = next(e["value"] for e in env if e["name"] == "NIM_MODEL_PROFILE")
    pod = pod_spec(
        spec,
        profile,
        download_container(spec, settings, env, selected),
        0,
        _cache_source(spec, profile, release, nodes),
    )
    pod["restartPolicy"] = "Never"
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] == "cache"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(download_job_name(release), namespace, labels),
        "spec": {
            "backoffLimit": DOWNLOAD_JOB_RETRIES,
            "template": {"metadata": {"labels": {**spec.podLabels, **labels}}, "spec": pod},
        },
    }


def _strategy(spec: Values) -> dict[str, Any]:
    if spec.strategy:
        return dict(spec.strategy)
    if spec.persistence.enabled and spec.persistence.accessMode != "ReadWriteMany":
        # A surge pod would need the claim (and a second set of GPUs) the old pod holds.
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


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
    spec: Values, settings: NimSettings, profile: Profile, release: str, namespace: str | None
) -> dict[str, Any]:
    monitor = spec.metrics.serviceMonitor
    endpoint: dict[str, Any] = {"port": monitor.port, "path": monitor.path}
    endpoint["interval"] = monitor.interval
    if tls_enabled(settings):
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


def _check_multi_node(
    spec: Values, settings: NimSettings, release: str, startup_failures: int
) -> None:
    """What a LeaderWorkerSet needs beyond what a Deployment does."""
    if spec.strategy:
        raise ConfigError(
            "invalid values strategy: a Deployment's; a LeaderWorkerSet replaces one group at a "
            "time (set strategy: {} with multi-node profiles)"
        )
    backend = settings.distributed_executor_backend
    if backend is not None and backend != "ray":
        raise ConfigError(
            f"invalid values env.NIM_DISTRIBUTED_EXECUTOR_BACKEND={backend!r}: more than one "
            "node needs vLLM's Ray executor (ray)"
        )
    if settings.ray_port == settings.server_port:
        raise ConfigError(
            f"invalid values env.NIM_RAY_PORT={settings.ray_port}: NIM_SERVER_PORT uses it"
        )
    startup = spec.startupProbe
    window = startup.initialDelaySeconds + startup.periodSeconds * startup_failures
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
