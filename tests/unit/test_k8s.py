"""The Kubernetes objects `nimctl k8s` renders: schema-valid, sized from the profile, NIM's numbers.

Core objects are checked offline against the Kubernetes JSON schemas that kubernetes-validate
bundles (strict: unknown fields fail), for the oldest Kubernetes the docs name and the newest
bundled. The ServiceMonitor is a CRD those schemas lack: it is checked against the part of
prometheus-operator's CRD schema that nimctl writes, transcribed below. The LeaderWorkerSet of a
multi-node profile is a CRD too: its own fields are checked against tests/support/lws_schema.py,
its two pod templates against Kubernetes' schema, each wrapped in a core PodTemplate.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from nimctl.errors import ConfigError
from nimctl.k8s import (
    GPU_RESOURCE,
    LWS_WORKER_INDEX_LABEL,
    PORT_NAME,
    PROFILE_ID_ANNOTATION,
    PROFILE_LABEL,
    claim_name,
    default_release,
    default_values_path,
    download_job_name,
    dump_yaml,
    load_values,
    lws_name,
    merge_values,
    render_manifests,
    shm_quantity,
    validate_values,
)
from nimctl.profiles import Profile, ProfileStore, builtin_profiles_dir
from tests.support.lws_schema import LWS_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples"
EXAMPLE = EXAMPLES / "qwen3.5-397b-a17b.yaml"
K8S_VERSIONS = ("1.30", "1.37")  # the oldest the docs name, the newest bundled
QWEN = "qwen3.5-397b-a17b"
NEMOTRON = "llama-3.1-nemotron-nano-vl-8b-v1"
SMALL4 = "mistral-small-4-119b-2603"
MISTRAL = "mistral-large-3-675b-instruct-2512"  # 8 GPUs, one node
TWO_NODES = {"multiNode": {"enabled": True, "nodes": 2}}
MULTI_NODE_EXAMPLE = EXAMPLES / f"{MISTRAL}-2-nodes.yaml"

# prometheus-operator v0.93.0, CRD monitoring.coreos.com_servicemonitors.yaml: the fields nimctl
# sets, with their types and patterns; additionalProperties false catches a misspelt field.
_DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$"
)
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name", "labels"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["endpoints", "selector"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "endpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "tlsConfig": {"type": "object"},
                        },
                    },
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def store() -> ProfileStore:
    return ProfileStore.load([builtin_profiles_dir()])


def with_defaults(overrides: dict | None = None) -> dict[str, Any]:
    return merge_values(load_values(None), overrides or {})


def render(store: ProfileStore, name: str, values: dict | None = None, **kw) -> dict[str, dict]:
    profile = store.get(name)
    objects = render_manifests(profile, store.id_of(profile), with_defaults(values), **kw)
    kinds = [obj["kind"] for obj in objects]
    assert len(kinds) == len(set(kinds))
    return {obj["kind"]: obj for obj in objects}


def template_of(objects: dict[str, dict], role: str = "leader") -> dict:
    """The pod template serving HTTP: the Deployment's, or the LeaderWorkerSet's leader (or
    worker) template."""
    if "LeaderWorkerSet" in objects:
        return objects["LeaderWorkerSet"]["spec"]["leaderWorkerTemplate"][f"{role}Template"]
    assert role == "leader"
    return objects["Deployment"]["spec"]["template"]


def pod_of(objects: dict[str, dict], role: str = "leader") -> dict:
    return template_of(objects, role)["spec"]


def container_of(objects: dict[str, dict], role: str = "leader") -> dict:
    (container,) = pod_of(objects, role)["containers"]
    return container


def env_of(objects: dict[str, dict], role: str = "leader") -> dict[str, Any]:
    env = container_of(objects, role)["env"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in env}


def validate(obj: dict, version: str) -> None:
    """Each kind against its schema: Kubernetes', or the CRD transcriptions."""
    if obj["kind"] == "ServiceMonitor":
        jsonschema.validate(obj, SERVICE_MONITOR_SCHEMA)
    elif obj["kind"] == "LeaderWorkerSet":
        jsonschema.validate(obj, LWS_SCHEMA)
        templates = obj["spec"]["leaderWorkerTemplate"]
        for role in ("leaderTemplate", "workerTemplate"):
            kubernetes_validate.validate(as_pod_template(templates[role]), version, strict=True)
    else:
        kubernetes_validate.validate(obj, version, strict=True)


def as_pod_template(template: dict) -> dict:
    # A core object whose `template` is a PodTemplateSpec, the type of the LWS templates.
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "x"},
        "template": template,
    }


def profile_with(store: ProfileStore, name: str, **hardware: Any) -> Profile:
    """A copy of a built-in profile with other hardware, e.g. spread over nodes."""
    base = store.get(name).model_dump()
    return Profile.model_validate({**base, "hardware": {**base["hardware"], **hardware}})


def all_profiles() -> list[str]:
    return sorted(p.name for p in ProfileStore.load([builtin_profiles_dir()]))


def example_text(store: ProfileStore, name: str = QWEN, values: dict | None = None) -> str:
    profile = store.get(name)
    release = default_release(profile)
    if values is None:
        header = (
            f"# Rendered by nimctl for the profile {name} with the defaults of\n"
            "# nimctl/k8s/values.yaml"
            f" (release {release}, no namespace): the output of\n"
            f"#   nimctl k8s --profile {name}\n"
            "# that is, nimctl.k8s.dump_yaml(render_manifests(profile, profile_id, "
            "load_values(None))).\n"
        )
    else:
        shown = yaml.safe_dump(values, default_flow_style=True, width=1000).strip()
        header = (
            f"# Rendered by nimctl for the profile {name} with nimctl/k8s/values.yaml\n"
            f"# and a values file values.yaml holding {shown}\n"
            f"# (release {release}, no namespace): the output of\n"
            f"#   nimctl k8s --profile {name} --values values.yaml\n"
            "# that is, nimctl.k8s.dump_yaml(render_manifests(profile, profile_id, "
            "load_values(Path('values.yaml')))).\n"
        )
    header += (
        "# Do not edit: tests/unit/test_k8s.py fails when this differs from what nimctl renders;\n"
        "# `NIMCTL_UPDATE_EXAMPLES=1 pytest tests/unit/test_k8s.py` rewrites it.\n"
    )
    objects = render_manifests(profile, store.id_of(profile), with_defaults(values))
    return header + dump_yaml(objects)


# --- schema validity -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", all_profiles())
def test_every_profile_renders_schema_valid_objects(store, name):
    objects = render_manifests(
        store.get(name),
        store.id_of(store.get(name)),
        with_defaults({"autoscaling": {"enabled": True}}),
        namespace="models",
    )
    kinds = sorted(obj["kind"] for obj in objects)
    if store.get(name).hardware.nodes > 1:
        # Each pod's own cache claim (ReadWriteOnce cannot be shared across nodes).
        workload = ["LeaderWorkerSet"]
    else:
        workload = ["Deployment", "PersistentVolumeClaim"]
    assert kinds == sorted([*workload, "Service", "ServiceMonitor", "HorizontalPodAutoscaler"])
    for obj in objects:
        assert obj["metadata"]["namespace"] == "models"
        for version in K8S_VERSIONS:
            validate(obj, version)


def test_the_validators_do_catch_mistakes(store):
    objects = render(store, "tiny")
    deployment = objects["Deployment"]
    container_of(objects)["livenessProbe"]["httpGet"]["pth"] = "/v1/health/live"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    monitor = objects["ServiceMonitor"]
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "startupPolicy"), "LeaderStarted"),
        (("spec", "replica"), 1),
        (("spec", "leaderWorkerTemplate", "size"), 0),
        (("spec", "leaderWorkerTemplate", "restartPolicy"), "RecreateGroup"),
        (("spec", "leaderWorkerTemplate", "leaderTemplates"), {}),
        (("spec", "rolloutStrategy", "rollingUpdateConfiguration", "maxSurges"), 0),
        (("spec", "networkConfig"), {"subdomainPolicy": "Unique"}),
    ],
)
def test_the_lws_schema_catches_mistakes(store, path, value):
    lws = render(store, MISTRAL, TWO_NODES)["LeaderWorkerSet"]
    validate(lws, K8S_VERSIONS[0])
    *parents, key = path
    target = lws
    for part in parents:
        target = target[part]
    target[key] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(lws, LWS_SCHEMA)


def test_the_lws_schema_requires_the_worker_template(store):
    lws = render(store, MISTRAL, TWO_NODES)["LeaderWorkerSet"]
    del lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(lws, LWS_SCHEMA)


@pytest.mark.parametrize("role", ["leader", "worker"])
def test_lws_pod_templates_are_checked_by_kubernetes_schema(store, role):
    objects = render(store, MISTRAL, TWO_NODES)
    container_of(objects, role)["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            as_pod_template(template_of(objects, role)), K8S_VERSIONS[0], strict=True
        )


def test_default_values_file_is_complete_and_valid():
    # Package data: the same file in a wheel and a checkout.
    assert default_values_path() == ROOT / "nimctl" / "k8s" / "values.yaml"
    values = validate_values(load_values(None))
    assert values.replicaCount == 1
    assert values.autoscaling.enabled is False
    assert values.metrics.serviceMonitor.enabled is True
    assert values.persistence.enabled is True
    assert values.multiNode.enabled is False
    assert values.multiNode.nodes is None
    assert values.multiNode.clusterStartTimeout == 300


# --- what the profile decides --------------------------------------------------------------------


def test_probes_have_nims_numbers(store):
    container = container_of(render(store, QWEN))
    expected = {
        "livenessProbe": ("/v1/health/live", 15, 1, 10, 1, 3),
        "readinessProbe": ("/v1/health/ready", 15, 1, 10, 1, 3),
        # failureThreshold from Qwen's 372 GiB: 3994 s of download at 100 MB/s, 799 s of
        # loading at 500 MB/s, 300 s of engine start, less the 40 s delay, in 10 s periods.
        "startupProbe": ("/v1/health/ready", 40, 1, 10, 1, 506),
    }
    for key, (path, delay, timeout, period, success, failure) in expected.items():
        probe = container[key]
        assert probe["httpGet"] == {"path": path, "port": PORT_NAME, "scheme": "HTTP"}
        assert (
            probe["initialDelaySeconds"],
            probe["timeoutSeconds"],
            probe["periodSeconds"],
            probe["successThreshold"],
            probe["failureThreshold"],
        ) == (delay, timeout, period, success, failure)


def startup_failures(objects: dict[str, dict]) -> int:
    return container_of(objects)["startupProbe"]["failureThreshold"]


def test_startup_budget_grows_with_the_weights(store):
    # 16.2, 113 and 372 GiB of weights.
    budgets = [startup_failures(render(store, name)) for name in (NEMOTRON, SMALL4, QWEN)]
    assert budgets == sorted(budgets) and len(set(budgets)) == 3
    # 16.2 GiB: 174 s + 35 s + 300 s - 40 s = 469 s.
    assert budgets[0] == 47


def test_startup_budget_follows_the_stated_rates(store):
    rates = {"startupProbe": {"downloadMBps": 1000, "loadMBps": 2000, "engineStartSeconds": 60}}
    # 372 GiB: 399 s + 200 s + 60 s - 40 s = 619 s.
    assert startup_failures(render(store, QWEN, rates)) == 62


@pytest.mark.parametrize(
    ("values", "kw"),
    [
        (None, {"download_job": True}),
        ({"env": {"NIM_DISABLE_MODEL_DOWNLOAD": "1"}}, {}),
        ({"env": {"NIM_MODEL_PATH": "/models/qwen"}}, {}),
    ],
    ids=["download-job", "download-disabled", "local-model"],
)
def test_startup_budget_leaves_out_a_download_the_pod_does_not_make(store, values, kw):
    # 372 GiB: 799 s + 300 s - 40 s.
    assert startup_failures(render(store, QWEN, values, **kw)) == 106


def test_a_generated_model_has_the_engine_start_only(store):
    # 300 s and 4 ms of loading, less 40 s: just over 26 periods.
    assert startup_failures(render(store, "tiny")) == 27


def test_multi_node_startup_budget_includes_the_wait_for_the_nodes(store):
    one = startup_failures(render(store, MISTRAL))
    two = startup_failures(render(store, MISTRAL, TWO_NODES))
    assert two - one == 30  # multiNode.clusterStartTimeout: 300 s


@pytest.mark.parametrize("kw", [{}, {"download_job": True}])
def test_a_stated_startup_failure_threshold_wins(store, kw):
    values = {"startupProbe": {"failureThreshold": 42}}
    assert startup_failures(render(store, QWEN, values, **kw)) == 42


@pytest.mark.parametrize("name", all_profiles())
def test_shm_is_a_memory_volume_sized_by_the_profile(store, name):
    objects = render(store, name)
    volumes = {v["name"]: v for v in pod_of(objects)["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {
        "medium": "Memory",
        "sizeLimit": shm_quantity(store.get(name)),
    }
    mounts = {m["name"]: m["mountPath"] for m in container_of(objects)["volumeMounts"]}
    assert mounts["dshm"] == "/dev/shm"


@pytest.mark.parametrize(
    ("name", "size"),
    [
        (QWEN, "32Gi"),
        ("mistral-large-3-675b-instruct-2512", "32Gi"),
        ("mistral-small-4-119b-2603", "32Gi"),
        (NEMOTRON, "16Gi"),
        ("tiny", "1Gi"),
    ],
)
def test_shm_size_per_profile(store, name, size):
    volumes = {v["name"]: v for v in pod_of(render(store, name))["volumes"]}
    assert volumes["dshm"]["emptyDir"]["sizeLimit"] == size


def test_shm_units_keep_dockers_binary_meaning(store):
    base = store.get("tiny").model_dump()
    for given, quantity in (
        ("32GB", "32Gi"),
        ("8GiB", "8Gi"),
        ("512MB", "512Mi"),
        ("64MiB", "64Mi"),
    ):
        assert shm_quantity(Profile.model_validate({**base, "shm_size": given})) == quantity


@pytest.mark.parametrize("name", all_profiles())
def test_gpu_limit_equals_the_profiles_gpus(store, name):
    profile = store.get(name)
    objects = render(store, name)
    resources = container_of(objects)["resources"]
    tolerations = pod_of(objects).get("tolerations", [])
    gpu_toleration = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    if profile.hardware.gpus:
        per_node = profile.hardware.gpus // profile.hardware.nodes
        assert resources["limits"][GPU_RESOURCE] == per_node
        assert gpu_toleration in tolerations
    else:
        assert GPU_RESOURCE not in yaml.safe_dump(objects["Deployment"])
        assert resources == {"requests": {"cpu": "2", "memory": "4Gi"}}
        assert gpu_toleration not in tolerations


def test_qwen_gets_eight_gpus_and_no_cpu_requests(store):
    resources = container_of(render(store, QWEN))["resources"]
    assert resources == {"limits": {GPU_RESOURCE: 8}}


def test_parallel_size_from_env_changes_the_gpu_count(store):
    values = {"env": {"NIM_TENSOR_PARALLEL_SIZE": 4, "NIM_PIPELINE_PARALLEL_SIZE": "2"}}
    assert container_of(render(store, NEMOTRON, values))["resources"]["limits"][GPU_RESOURCE] == 8
    values = {"env": {"NIM_TENSOR_PARALLEL_SIZE": 4}}
    assert container_of(render(store, QWEN, values))["resources"]["limits"][GPU_RESOURCE] == 4
    # A CPU profile stays on CPU.
    assert "limits" not in container_of(render(store, "tiny", values))["resources"]


def test_profile_identity_is_labelled_and_pinned(store):
    profile = store.get(QWEN)
    objects = render(store, QWEN)
    deployment = objects["Deployment"]
    template = deployment["spec"]["template"]
    for meta in (deployment["metadata"], template["metadata"]):
        assert meta["labels"]["app.kubernetes.io/name"] == "nimctl"
        assert meta["labels"]["app.kubernetes.io/instance"] == "qwen3-5-397b-a17b"
        assert meta["labels"][PROFILE_LABEL] == QWEN
        assert meta["annotations"][PROFILE_ID_ANNOTATION] == store.id_of(profile)
    assert env_of(objects)["NIM_MODEL_PROFILE"] == store.id_of(profile)
    assert env_of(render(store, QWEN, {"pinProfileId": False}))["NIM_MODEL_PROFILE"] == QWEN
    # The selector is immutable: it must not mention the profile.
    assert PROFILE_LABEL not in deployment["spec"]["selector"]["matchLabels"]


def test_container_runs_the_image_entrypoint_with_nims_environment(store):
    objects = render(store, QWEN)
    container = container_of(objects)
    assert "command" not in container
    assert "args" not in container
    assert container["image"].startswith("nimctl:")
    assert container["ports"] == [{"name": PORT_NAME, "containerPort": 8000, "protocol": "TCP"}]
    env = env_of(objects)
    assert env["NIM_LOG_LEVEL"] == "INFO"
    assert env["NIM_JSONL_LOGGING"] == "1"
    assert env["NIM_CACHE_PATH"] == "/opt/nim/.cache"
    assert env["NIM_SERVER_PORT"] == "8000"
    assert "NIM_API_KEY" not in env
    assert "HF_TOKEN" not in env
    pod = pod_of(objects)
    assert pod["securityContext"] == {
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "runAsNonRoot": True,
        "fsGroupChangePolicy": "OnRootMismatch",
    }
    assert pod["terminationGracePeriodSeconds"] == 60
    assert pod["enableServiceLinks"] is False


# --- cache claim, Service, ServiceMonitor, HPA ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size"),
    [
        (QWEN, "410Gi"),
        ("mistral-large-3-675b-instruct-2512", "700Gi"),
        ("mistral-small-4-119b-2603", "130Gi"),
        (NEMOTRON, "50Gi"),
        ("tiny", "50Gi"),
    ],
)
def test_cache_claim_holds_the_weights(store, name, size):
    objects = render(store, name)
    claim = objects["PersistentVolumeClaim"]
    assert claim["spec"]["resources"]["requests"]["storage"] == size
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in claim["spec"]
    volumes = {v["name"]: v for v in pod_of(objects)["volumes"]}
    assert volumes["cache"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in container_of(objects)["volumeMounts"]}
    assert mounts["cache"] == "/opt/nim/.cache"
    assert objects["Deployment"]["spec"]["strategy"] == {"type": "Recreate"}


def test_cache_claim_options(store):
    objects = render(store, QWEN, {"persistence": {"size": "1Ti", "storageClass": "fast"}})
    claim = objects["PersistentVolumeClaim"]["spec"]
    assert claim["resources"]["requests"]["storage"] == "1Ti"
    assert claim["storageClassName"] == "fast"
    claim = render(store, QWEN, {"persistence": {"storageClass": "-"}})["PersistentVolumeClaim"]
    assert claim["spec"]["storageClassName"] == ""

    objects = render(store, QWEN, {"persistence": {"existingClaim": "shared-models"}})
    assert "PersistentVolumeClaim" not in objects
    volumes = {v["name"]: v for v in pod_of(objects)["volumes"]}
    assert volumes["cache"] == {
        "name": "cache",
        "persistentVolumeClaim": {"claimName": "shared-models"},
    }

    objects = render(store, QWEN, {"persistence": {"enabled": False}})
    assert "PersistentVolumeClaim" not in objects
    volumes = {v["name"]: v for v in pod_of(objects)["volumes"]}
    assert volumes["cache"] == {"name": "cache", "emptyDir": {}}

    objects = render(store, QWEN, {"persistence": {"accessMode": "ReadWriteMany"}})
    assert objects["Deployment"]["spec"]["strategy"]["type"] == "RollingUpdate"


def test_cache_path_follows_the_env(store):
    objects = render(store, "tiny", {"env": {"NIM_CACHE_PATH": "/models"}})
    mounts = {m["name"]: m["mountPath"] for m in container_of(objects)["volumeMounts"]}
    assert mounts["cache"] == "/models"


def test_service_targets_the_named_container_port(store):
    objects = render(store, QWEN)
    service = objects["Service"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": PORT_NAME, "port": 8000, "targetPort": PORT_NAME, "protocol": "TCP"}
    ]
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["selector"] == objects["Deployment"]["spec"]["selector"]["matchLabels"]


def test_service_monitor_scrapes_v1_metrics(store):
    objects = render(store, QWEN, {"metrics": {"serviceMonitor": {"additionalLabels": {"a": "b"}}}})
    monitor = objects["ServiceMonitor"]
    assert monitor["spec"]["endpoints"] == [
        {"port": PORT_NAME, "path": "/v1/metrics", "interval": "15s"}
    ]
    assert monitor["metadata"]["labels"]["a"] == "b"
    service_labels = objects["Service"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    assert {p["name"] for p in objects["Service"]["spec"]["ports"]} == {PORT_NAME}
    assert "ServiceMonitor" not in render(
        store, QWEN, {"metrics": {"serviceMonitor": {"enabled": False}}}
    )


def test_autoscaler_is_off_by_default_and_scales_on_running_requests(store):
    assert "HorizontalPodAutoscaler" not in render(store, QWEN)
    objects = render(store, QWEN, {"autoscaling": {"enabled": True, "maxReplicas": 4}})
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": objects["Deployment"]["metadata"]["name"],
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 4)
    assert hpa["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "num_requests_running"},
                "target": {"type": "AverageValue", "averageValue": "5"},
            },
        }
    ]
    assert hpa["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}
    # The HPA owns the replica count.
    assert "replicas" not in objects["Deployment"]["spec"]


def test_autoscaler_takes_raw_metrics(store):
    metric = {
        "type": "Pods",
        "pods": {
            "metric": {"name": "gpu_cache_usage_perc"},
            "target": {"type": "AverageValue", "averageValue": "500m"},
        },
    }
    objects = render(store, QWEN, {"autoscaling": {"enabled": True, "metrics": [metric]}})
    assert objects["HorizontalPodAutoscaler"]["spec"]["metrics"] == [metric]


# --- multi-node: LeaderWorkerSet -----------------------------------------------------------------


def test_multi_node_values_render_a_leader_worker_set(store):
    objects = render(store, MISTRAL, TWO_NODES, namespace="models")
    assert sorted(objects) == ["LeaderWorkerSet", "Service", "ServiceMonitor"]
    lws = objects["LeaderWorkerSet"]
    release = default_release(store.get(MISTRAL))
    assert lws["metadata"]["name"] == lws_name(release) == f"{release}-lws"
    # Not the Service's name: LWS creates a headless Service named after itself.
    assert lws["metadata"]["name"] != objects["Service"]["metadata"]["name"]
    spec = lws["spec"]
    assert spec["replicas"] == 1
    assert spec["startupPolicy"] == "LeaderCreated"
    assert spec["rolloutStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdateConfiguration": {"maxUnavailable": 1, "maxSurge": 0},
    }
    group = spec["leaderWorkerTemplate"]
    assert group["size"] == 2
    assert group["restartPolicy"] == "RecreateGroupOnPodRestart"
    for version in K8S_VERSIONS:
        for obj in objects.values():
            validate(obj, version)


def test_a_multi_node_profile_renders_a_leader_worker_set_by_itself(store):
    profile = profile_with(store, QWEN, nodes=2)
    objects = render_manifests(profile, store.id_of(profile), load_values(None))
    (lws,) = [obj for obj in objects if obj["kind"] == "LeaderWorkerSet"]
    assert "Deployment" not in {obj["kind"] for obj in objects}
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    # multiNode.nodes spreads it further.
    values = with_defaults({"multiNode": {"enabled": True, "nodes": 4}})
    (lws, *_) = render_manifests(profile, store.id_of(profile), values)
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 4
    leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    assert leader["resources"]["limits"][GPU_RESOURCE] == 2
    # GPUs changed through env must still be spread evenly over the profile's nodes.
    values = with_defaults({"env": {"NIM_TENSOR_PARALLEL_SIZE": 3}})
    with pytest.raises(ConfigError, match="invalid values env: .*nodes=2 must divide .*gpus=3"):
        render_manifests(profile, store.id_of(profile), values)


@pytest.mark.parametrize(("nodes", "per_node"), [(2, 4), (4, 2), (8, 1)])
def test_gpus_per_node_and_group_size(store, nodes, per_node):
    objects = render(store, MISTRAL, {"multiNode": {"enabled": True, "nodes": nodes}})
    assert objects["LeaderWorkerSet"]["spec"]["leaderWorkerTemplate"]["size"] == nodes
    for role in ("leader", "worker"):
        assert container_of(objects, role)["resources"] == {"limits": {GPU_RESOURCE: per_node}}
        assert env_of(objects, role)["NIM_NUM_COMPUTE_NODES"] == str(nodes)


def test_gpus_from_env_are_spread_over_the_nodes(store):
    values = {**TWO_NODES, "env": {"NIM_TENSOR_PARALLEL_SIZE": 8, "NIM_PIPELINE_PARALLEL_SIZE": 2}}
    objects = render(store, MISTRAL, values)
    assert container_of(objects, "worker")["resources"]["limits"][GPU_RESOURCE] == 8


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"multiNode": {"enabled": True, "nodes": 3}}, "multiNode.nodes=3: 8 GPUs"),
        ({"multiNode": {"enabled": True, "nodes": 5}}, "multiNode.nodes=5: 8 GPUs"),
        ({**TWO_NODES, "env": {"NIM_TENSOR_PARALLEL_SIZE": 3}}, "multiNode.nodes=2: 3 GPUs"),
    ],
)
def test_nodes_must_divide_the_gpus(store, values, message):
    with pytest.raises(ConfigError, match=message):
        render(store, MISTRAL, values)


def test_a_cpu_profile_is_not_spread_over_nodes(store):
    with pytest.raises(ConfigError, match="runs on CPU"):
        render(store, "tiny", TWO_NODES)


def test_leader_is_the_deployments_pod_plus_the_cluster_settings(store):
    single = render(store, MISTRAL)
    multi = render(store, MISTRAL, TWO_NODES)
    leader, pod = container_of(multi), container_of(single)
    assert "command" not in leader  # the image's entrypoint, `nimctl serve`
    for key in ("image", "livenessProbe", "readinessProbe", "lifecycle"):
        assert leader[key] == pod[key]
    # The same startup probe, but for its budget: the leader waits for the workers first.
    assert {**leader["startupProbe"], "failureThreshold": 0} == {
        **pod["startupProbe"],
        "failureThreshold": 0,
    }
    assert leader["ports"] == [
        {"name": PORT_NAME, "containerPort": 8000, "protocol": "TCP"},
        {"name": "ray", "containerPort": 6379, "protocol": "TCP"},
    ]
    env = env_of(multi)
    assert env["NIM_NUM_COMPUTE_NODES"] == "2"
    assert env["NIM_CLUSTER_START_TIMEOUT"] == "300"
    assert env.items() >= env_of(single).items()
    assert set(env) - set(env_of(single)) == {"NIM_NUM_COMPUTE_NODES", "NIM_CLUSTER_START_TIMEOUT"}
    leader_pod, deployment_pod = pod_of(multi), pod_of(single)
    for key in ("securityContext", "terminationGracePeriodSeconds", "tolerations"):
        assert leader_pod[key] == deployment_pod[key]
    volumes = {v["name"]: v for v in leader_pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    values = {
        "multiNode": {"enabled": True, "nodes": 2, "clusterStartTimeout": 900},
        "env": {"NIM_RAY_PORT": "6380"},
    }
    objects = render(store, MISTRAL, values)
    assert env_of(objects)["NIM_CLUSTER_START_TIMEOUT"] == "900"
    assert container_of(objects)["ports"][1]["containerPort"] == 6380


def test_worker_runs_nimctl_worker_without_probes(store):
    objects = render(store, MISTRAL, {**TWO_NODES, "customArgs": ["--port", "8000"]})
    worker, leader = container_of(objects, "worker"), container_of(objects, "leader")
    assert worker["command"] == ["nimctl", "worker"]
    assert "args" not in worker  # customArgs are for `nimctl serve`
    assert leader["args"] == ["--port", "8000"]
    for key in ("livenessProbe", "readinessProbe", "startupProbe", "ports", "lifecycle"):
        assert key not in worker
    for key in ("image", "imagePullPolicy", "env", "resources", "volumeMounts", "securityContext"):
        assert worker[key] == leader[key]
    assert pod_of(objects, "worker")["volumes"] == pod_of(objects, "leader")["volumes"]
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    assert mounts == {"dshm": "/dev/shm", "cache": "/opt/nim/.cache"}
    assert template_of(objects, "worker")["metadata"] == template_of(objects, "leader")["metadata"]


def test_service_selects_the_leaders_only(store):
    objects = render(store, MISTRAL, TWO_NODES)
    selector = objects["Service"]["spec"]["selector"]
    assert selector[LWS_WORKER_INDEX_LABEL] == "0"
    # Everything else in the selector is on the template: LWS adds the worker index.
    labels = template_of(objects)["metadata"]["labels"]
    assert {k: v for k, v in selector.items() if k != LWS_WORKER_INDEX_LABEL}.items() <= (
        labels.items()
    )
    # The ServiceMonitor still finds the Service, so it scrapes the leaders.
    monitor = objects["ServiceMonitor"]["spec"]["selector"]["matchLabels"]
    assert monitor.items() <= objects["Service"]["metadata"]["labels"].items()
    assert LWS_WORKER_INDEX_LABEL not in render(store, MISTRAL)["Service"]["spec"]["selector"]


def test_autoscaler_scales_the_leader_worker_set(store):
    values = {**TWO_NODES, "autoscaling": {"enabled": True, "maxReplicas": 3}}
    objects = render(store, MISTRAL, values)
    lws = objects["LeaderWorkerSet"]
    assert objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"] == {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "name": lws["metadata"]["name"],
    }
    assert "replicas" not in lws["spec"]
    assert (
        render(store, MISTRAL, {**TWO_NODES, "replicaCount": 3})["LeaderWorkerSet"]["spec"][
            "replicas"
        ]
        == 3
    )


def test_multi_node_cache(store):
    release = default_release(store.get(MISTRAL))
    # ReadWriteOnce (the default): a claim per pod, made and deleted with it, sized as usual.
    objects = render(store, MISTRAL, {**TWO_NODES, "persistence": {"storageClass": "fast"}})
    assert "PersistentVolumeClaim" not in objects
    for role in ("leader", "worker"):
        volumes = {v["name"]: v for v in pod_of(objects, role)["volumes"]}
        claim = volumes["cache"]["ephemeral"]["volumeClaimTemplate"]["spec"]
        assert claim == {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "fast",
            "resources": {"requests": {"storage": "700Gi"}},
        }
    # ReadWriteMany: one claim every pod of every group shares.
    objects = render(store, MISTRAL, {**TWO_NODES, "persistence": {"accessMode": "ReadWriteMany"}})
    claim = objects["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for role in ("leader", "worker"):
        volumes = {v["name"]: v for v in pod_of(objects, role)["volumes"]}
        assert volumes["cache"] == {
            "name": "cache",
            "persistentVolumeClaim": {"claimName": claim_name(release)},
        }
    objects = render(store, MISTRAL, {**TWO_NODES, "persistence": {"existingClaim": "models"}})
    assert "PersistentVolumeClaim" not in objects
    volumes = {v["name"]: v for v in pod_of(objects, "worker")["volumes"]}
    assert volumes["cache"]["persistentVolumeClaim"] == {"claimName": "models"}
    objects = render(store, MISTRAL, {**TWO_NODES, "persistence": {"enabled": False}})
    volumes = {v["name"]: v for v in pod_of(objects, "worker")["volumes"]}
    assert volumes["cache"] == {"name": "cache", "emptyDir": {}}
    for version in K8S_VERSIONS:
        validate(objects["LeaderWorkerSet"], version)


def test_multi_node_release_names_fit_the_statefulsets(store):
    profile = store.get(MISTRAL)
    values = with_defaults(TWO_NODES)
    render_manifests(profile, store.id_of(profile), values, release="a" * 46)  # "-lws-0": 52
    with pytest.raises(ConfigError, match="invalid release"):
        render_manifests(profile, store.id_of(profile), values, release="a" * 47)
    # The single-node Deployment keeps Helm's 53.
    render_manifests(profile, store.id_of(profile), load_values(None), release="a" * 53)


def test_multi_node_nodes_null_in_a_values_file_means_the_profiles(store, tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text("multiNode:\n  nodes: null\n")
    assert validate_values(load_values(path)).multiNode.nodes is None


# --- values overrides ----------------------------------------------------------------------------


def test_values_overrides_apply(store):
    values = {
        "replicaCount": 3,
        "image": {"repository": "registry.example/nimctl", "tag": "abc"},
        "customArgs": ["--port", "9000"],
        "env": {
            "NIM_MAX_MODEL_LEN": 8192,
            "NIM_ENABLE_KV_CACHE_REUSE": True,
            "NIM_SERVER_PORT": 9000,
            "NIM_JSONL_LOGGING": None,
        },
        "secretEnv": {"HF_TOKEN": {"secretName": "hf"}},
        "extraEnv": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        ],
        "livenessProbe": {"failureThreshold": 6, "periodSeconds": 20},
        "startupProbe": {"enabled": False},
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml"}],
        "podAnnotations": {"team": "vision"},
        "service": {"type": "LoadBalancer", "port": 80},
    }
    objects = render(store, QWEN, values, release="vlm", namespace="serving")
    deployment = objects["Deployment"]
    assert deployment["metadata"]["name"] == "vlm"
    assert deployment["spec"]["replicas"] == 3
    container = container_of(objects)
    assert container["image"] == "registry.example/nimctl:abc"
    assert container["args"] == ["--port", "9000"]
    assert container["ports"][0]["containerPort"] == 9000
    env = env_of(objects)
    assert env["NIM_MAX_MODEL_LEN"] == "8192"
    assert env["NIM_ENABLE_KV_CACHE_REUSE"] == "1"
    assert "NIM_JSONL_LOGGING" not in env
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert container["livenessProbe"]["failureThreshold"] == 6
    assert container["livenessProbe"]["periodSeconds"] == 20
    assert container["livenessProbe"]["initialDelaySeconds"] == 15
    assert "startupProbe" not in container
    pod = pod_of(objects)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"][0]["key"] == GPU_RESOURCE
    assert pod["tolerations"][1]["key"] == "dedicated"
    assert deployment["spec"]["template"]["metadata"]["annotations"]["team"] == "vision"
    service = objects["Service"]
    assert service["metadata"]["namespace"] == "serving"
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"][0]["port"] == 80
    assert objects["PersistentVolumeClaim"]["metadata"]["name"] == "vlm-cache"
    for obj in objects.values():
        if obj["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(obj, K8S_VERSIONS[0], strict=True)


# Files in the pod (a mounted Secret): nimctl k8s does not look for them on this machine.
TLS_FILES = {
    "NIM_SSL_KEY_PATH": "/etc/nimctl/tls/tls.key",
    "NIM_SSL_CERT_PATH": "/etc/nimctl/tls/tls.crt",
}
CA_FILE = {"NIM_SSL_CA_CERTS_PATH": "/etc/nimctl/tls/ca.crt"}


def test_tls_without_its_files_would_crash_every_pod(store):
    with pytest.raises(ConfigError, match="NIM_SSL_MODE=TLS needs NIM_SSL_KEY_PATH"):
        render(store, "tiny", {"env": {"NIM_SSL_MODE": "TLS"}})


def test_tls_switches_probes_and_scrapes_to_https(store):
    tls_config = {"ca": {"secret": {"name": "nimctl-ca", "key": "ca.crt"}}}
    values = {
        "env": {"NIM_SSL_MODE": "TLS", **TLS_FILES},
        "metrics": {"serviceMonitor": {"tlsConfig": tls_config}},
    }
    objects = render(store, "tiny", values)
    assert container_of(objects)["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    endpoint = objects["ServiceMonitor"]["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == tls_config
    jsonschema.validate(objects["ServiceMonitor"], SERVICE_MONITOR_SCHEMA)


def test_mtls_cannot_be_probed(store):
    with pytest.raises(ConfigError, match="probes"):
        render(store, "tiny", {"env": {"NIM_SSL_MODE": "mtls", **TLS_FILES, **CA_FILE}})
    off = {"enabled": False}
    values = {
        "env": {"NIM_SSL_MODE": "MTLS", **TLS_FILES, **CA_FILE},
        "livenessProbe": off,
        "readinessProbe": off,
        "startupProbe": off,
    }
    assert "readinessProbe" not in container_of(render(store, "tiny", values))


@pytest.mark.parametrize(
    ("values", "port"),
    [
        ({"env": {"NIM_SERVER_PORT": None}}, 8000),  # the pod's default
        (
            {
                "env": {"NIM_SERVER_PORT": None},
                "extraEnv": [{"name": "NIM_SERVER_PORT", "value": "9001"}],
            },
            9001,
        ),
        ({"env": {"NIM_SERVER_PORT": "9002", "NIM_SSL_MODE": "tls", **TLS_FILES}}, 9002),
    ],
)
def test_the_container_is_rendered_from_the_pods_settings(store, values, port):
    """The port (wherever the pod's environment sets it) and the probes' scheme are the pod's
    validated settings, as `nimctl serve` will read them there, not the values' strings."""
    container = container_of(render(store, "tiny", values))
    assert container["ports"][0]["containerPort"] == port
    tls = "NIM_SSL_MODE" in values["env"]
    assert container["readinessProbe"]["httpGet"]["scheme"] == ("HTTPS" if tls else "HTTP")


def test_load_values_merges_a_file_over_the_defaults(tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text(
        "replicaCount: 2\nenv:\n  NIM_LOG_LEVEL: DEBUG\nstartupProbe:\n  failureThreshold: 360\n"
    )
    values = load_values(path)
    assert values["replicaCount"] == 2
    assert values["env"]["NIM_LOG_LEVEL"] == "DEBUG"
    assert values["env"]["NIM_CACHE_PATH"] == "/opt/nim/.cache"
    assert values["startupProbe"]["failureThreshold"] == 360
    assert values["startupProbe"]["initialDelaySeconds"] == 40
    path.write_text("env:\n  NIM_JSONL_LOGGING: null\n")
    assert "NIM_JSONL_LOGGING" not in load_values(path)["env"]
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_values(empty) == load_values(None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "must be a YAML mapping"),
        ("a: [", "not valid YAML"),
    ],
)
def test_load_values_rejects_bad_files(tmp_path, text, message):
    path = tmp_path / "values.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_values(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_values(tmp_path / "missing.yaml")


def test_merge_values_merges_mappings_replaces_lists_and_deletes_on_none():
    base = {"a": {"b": 1, "c": 2}, "l": [1, 2], "d": 1}
    assert merge_values(base, {"a": {"b": 3}, "l": [3], "d": None}) == {
        "a": {"b": 3, "c": 2},
        "l": [3],
    }


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"replicaCount": -1}, "replicaCount"),
        ({"replicaCount": "2"}, "replicaCount"),
        ({"replicas": 2}, "replicas: unknown key"),
        ({"image": {"tag": 1.0}}, "image.tag"),
        ({"livenessProbe": {"failureThreshold": 0}}, "livenessProbe.failureThreshold"),
        ({"readinessProbe": {"periodSeconds": 0}}, "readinessProbe.periodSeconds"),
        ({"startupProbe": {"initialDelaySeconds": -5}}, "startupProbe.initialDelaySeconds"),
        ({"startupProbe": {"downloadMBps": 0}}, "startupProbe.downloadMBps"),
        ({"startupProbe": {"loadMBps": "fast"}}, "startupProbe.loadMBps"),
        ({"livenessProbe": {"successThreshold": 2}}, "livenessProbe.successThreshold"),
        ({"readinessProbe": {"path": "v1/health/ready"}}, "readinessProbe.path"),
        ({"env": {"NIM_MODEL_PROFILE": "tiny"}}, "env.NIM_MODEL_PROFILE"),
        ({"env": {"NIM_MAX_MODEL_LENGTH": 1}}, "env.NIM_MAX_MODEL_LENGTH"),
        ({"env": {"NIM_SERVER_PORT": 70000}}, "env.NIM_SERVER_PORT"),
        ({"env": {"NIM_CACHE_PATH": "cache"}}, "env.NIM_CACHE_PATH"),
        ({"env": {"NIM_LOG_LEVEL": ["INFO"]}}, "env.NIM_LOG_LEVEL"),
        ({"env": {"NIM_TENSOR_PARALLEL_SIZE": 0}}, "env.NIM_TENSOR_PARALLEL_SIZE"),
        ({"env": {"NIM_SHUTDOWN_GRACE_PERIOD": 90}}, "terminationGracePeriodSeconds"),
        ({"terminationGracePeriodSeconds": 20}, "terminationGracePeriodSeconds"),
        ({"persistence": {"size": "big"}}, "persistence.size"),
        ({"persistence": {"accessMode": "ReadOnlyMany"}}, "persistence.accessMode"),
        ({"service": {"port": 0}}, "service.port"),
        ({"autoscaling": {"minReplicas": 0}}, "autoscaling.minReplicas"),
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "autoscaling.maxReplicas"),
        ({"autoscaling": {"averageValue": "five"}}, "autoscaling.averageValue"),
        ({"metrics": {"serviceMonitor": {"interval": "15"}}}, "metrics.serviceMonitor.interval"),
        ({"resources": {"gpu": {"limits": {GPU_RESOURCE: 4}}}}, "resources.gpu.limits"),
        ({"extraEnv": [{"name": "NIM_LOG_LEVEL", "value": "DEBUG"}]}, "NIM_LOG_LEVEL is set twice"),
        ({"replicaCount": None}, "replicaCount: missing"),
        ({"multiNode": {"enabled": "yes"}}, "multiNode.enabled"),
        ({"multiNode": {"nodes": 2}}, "multiNode.nodes=2: set multiNode.enabled"),
        ({"multiNode": {"enabled": True}}, "multiNode.enabled: multi-node needs 2 or more"),
        ({"multiNode": {"enabled": True, "nodes": 1}}, "multiNode.nodes=1"),
        ({"multiNode": {"enabled": True, "nodes": 0}}, "multiNode.nodes"),
        ({"multiNode": {"enabled": True, "nodes": 3}}, "multiNode.nodes=3: 8 GPUs"),
        ({"multiNode": {"enabled": True, "nodes": 16}}, "multiNode.nodes=16: 8 GPUs"),
        ({"multiNode": {"clusterStartTimeout": 0}}, "multiNode.clusterStartTimeout"),
        ({"multiNode": {"size": 2}}, "multiNode.size: unknown key"),
        (
            {
                **TWO_NODES,
                "multiNode": {**TWO_NODES["multiNode"], "clusterStartTimeout": 3600},
                "startupProbe": {"failureThreshold": 180},  # a stated budget, too short
            },
            "multiNode.clusterStartTimeout=3600",
        ),
        ({**TWO_NODES, "strategy": {"type": "Recreate"}}, "invalid values strategy"),
        ({**TWO_NODES, "env": {"NIM_DISTRIBUTED_EXECUTOR_BACKEND": "mp"}}, "BACKEND='mp'"),
        ({**TWO_NODES, "env": {"NIM_RAY_PORT": 8000}}, "env.NIM_RAY_PORT=8000"),
        ({**TWO_NODES, "env": {"NIM_RAY_PORT": 0}}, "env.NIM_RAY_PORT='0'"),
        (
            {"env": {"NIM_NUM_COMPUTE_NODES": 2}},
            "env.NIM_NUM_COMPUTE_NODES: rendered from the profile",
        ),
        ({"env": {"NIM_CLUSTER_START_TIMEOUT": 60}}, "multiNode.clusterStartTimeout"),
        (
            {"extraEnv": [{"name": "NIM_NUM_COMPUTE_NODES", "value": "2"}]},
            "NIM_NUM_COMPUTE_NODES: rendered from the profile; set multiNode",
        ),
    ],
)
def test_invalid_values_name_the_key(store, values, key):
    profile = store.get(QWEN)
    with pytest.raises(ConfigError) as caught:
        render_manifests(profile, store.id_of(profile), with_defaults(values))
    message = str(caught.value)
    assert key in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"release": "Qwen"}, "invalid release"),
        ({"release": "9lives"}, "invalid release"),
        ({"release": "a" * 54}, "invalid release"),
        ({"namespace": "my_ns"}, "invalid namespace"),
    ],
)
def test_invalid_names(store, kwargs, message):
    profile = store.get("tiny")
    with pytest.raises(ConfigError, match=message):
        render_manifests(profile, store.id_of(profile), load_values(None), **kwargs)


def test_default_release_is_a_dns_label(store):
    assert default_release(store.get(QWEN)) == "qwen3-5-397b-a17b"
    assert default_release(store.get("tiny")) == "tiny"
    for profile in store:
        render_manifests(profile, store.id_of(profile), load_values(None))  # bad names raise


# --- output --------------------------------------------------------------------------------------


def test_dump_yaml_is_multi_document_and_plain(store):
    profile = store.get(QWEN)
    objects = render_manifests(
        profile, store.id_of(profile), with_defaults({"autoscaling": {"enabled": True}})
    )
    text = dump_yaml(objects)
    assert text.startswith("---\napiVersion: apps/v1\nkind: Deployment\n")
    assert text.count("\n---\n") == len(objects) - 1
    assert "&id" not in text
    assert "*id" not in text
    assert list(yaml.safe_load_all(text)) == objects
    assert dump_yaml(objects) == text


@pytest.mark.parametrize(
    ("path", "name", "values"),
    [(EXAMPLE, QWEN, None), (MULTI_NODE_EXAMPLE, MISTRAL, TWO_NODES)],
    ids=["single-node", "multi-node"],
)
def test_example_is_what_nimctl_renders(store, path, name, values):
    expected = example_text(store, name, values)
    if os.environ.get("NIMCTL_UPDATE_EXAMPLES") == "1":
        path.write_text(expected)
    assert path.read_text() == expected, (
        f"{path.relative_to(ROOT)} is stale: run "
        "`NIMCTL_UPDATE_EXAMPLES=1 pytest tests/unit/test_k8s.py` to rewrite it"
    )


def test_example_values_file_renders_the_same(store, tmp_path):
    # The multi-node example's header names a values file: it gives the same objects.
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(TWO_NODES))
    profile = store.get(MISTRAL)
    objects = render_manifests(profile, store.id_of(profile), load_values(path))
    assert objects == list(render(store, MISTRAL, TWO_NODES).values())


def test_a_key_deleted_in_a_values_file_stays_deleted(store, tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text("env:\n  NIM_JSONL_LOGGING: null\n")
    profile = store.get("tiny")
    objects = render_manifests(profile, store.id_of(profile), load_values(path))
    env = {e["name"] for e in objects[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "NIM_JSONL_LOGGING" not in env
    assert "NIM_LOG_LEVEL" in env


def test_partial_values_are_refused(store):
    profile = store.get("tiny")
    with pytest.raises(ConfigError, match="image: missing"):
        render_manifests(profile, store.id_of(profile), {"replicaCount": 1})


def test_dump_yaml_quotes_numeric_looking_strings():
    # kubectl's YAML parser would read a plain 123e4567 as a number (an env value must be text).
    text = dump_yaml([{"id": "123e4567", "port": "8000", "name": "abc"}])
    assert "id: '123e4567'" in text
    assert "port: '8000'" in text
    assert "name: abc" in text


def test_api_key_secret_is_mounted_as_the_key_file(store):
    assert "api-keys" not in str(pod_of(render(store, "tiny")))  # off by default
    values = {"apiKeySecret": {"secretName": "nimctl-api-keys", "key": "keys"}}
    objects = render(store, "tiny", values)
    assert env_of(objects)["NIM_API_KEY_FILE"] == "/var/run/secrets/nimctl/api-keys/keys"
    volume = {"name": "api-keys", "secret": {"secretName": "nimctl-api-keys", "defaultMode": 288}}
    assert volume in pod_of(objects)["volumes"]
    mount = {"name": "api-keys", "mountPath": "/var/run/secrets/nimctl/api-keys", "readOnly": True}
    assert mount in container_of(objects)["volumeMounts"]  # a directory, so updates arrive
    for version in K8S_VERSIONS:
        validate(objects["Deployment"], version)
    twice = {**values, "env": {"NIM_API_KEY_FILE": "/elsewhere"}}
    with pytest.raises(ConfigError, match="NIM_API_KEY_FILE is set twice"):
        render(store, "tiny", twice)
    # Multi-node: workers read the same settings, so they get the file too.
    lws = render(store, MISTRAL, {**TWO_NODES, **values})["LeaderWorkerSet"]
    for role in ("leaderTemplate", "workerTemplate"):
        pod = lws["spec"]["leaderWorkerTemplate"][role]["spec"]
        assert volume in pod["volumes"]
        assert mount in pod["containers"][0]["volumeMounts"]


# --- the download Job ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", QWEN])
def test_download_job_fills_the_serving_pods_cache_claim(store, name):
    secret = {"secretEnv": {"HF_TOKEN": {"secretName": "hf-token", "key": "token"}}}
    objects = render(store, name, secret, namespace="models", download_job=True)
    release = default_release(store.get(name))
    job = objects["Job"]
    assert job["apiVersion"] == "batch/v1"
    assert job["metadata"]["name"] == download_job_name(release) == f"{release}-download"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["image"] == container_of(objects)["image"]
    profile_id = store.id_of(store.get(name))
    assert container["command"] == ["nimctl", "download", "--profile", profile_id]
    # The same claim at the same path as the serving pod, and nothing else.
    assert pod["volumes"] == [v for v in pod_of(objects)["volumes"] if v["name"] == "cache"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim_name(release)
    assert container["volumeMounts"] == [
        m for m in container_of(objects)["volumeMounts"] if m["name"] == "cache"
    ]
    assert GPU_RESOURCE not in str(container.get("resources"))
    assert "tolerations" not in pod
    # The serving pods' environment, the token from its Secret; they alone start offline.
    job_env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    serving_env = env_of(objects)
    assert serving_env.pop("NIM_DISABLE_MODEL_DOWNLOAD") == "1"
    assert job_env == serving_env
    assert job_env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "token"}}
    # Neither the Deployment nor the Service may take the Job's pod as one of theirs.
    selector = objects["Deployment"]["spec"]["selector"]["matchLabels"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= labels.items()
    assert not objects["Service"]["spec"]["selector"].items() <= labels.items()
    for version in K8S_VERSIONS:
        validate(job, version)
        validate(objects["Deployment"], version)


def test_download_job_leaves_out_what_names_files_it_does_not_mount(store):
    values = {
        "apiKeySecret": {"secretName": "nimctl-api-keys", "key": "keys"},
        "env": {"NIM_SSL_MODE": "TLS", "NIM_SSL_KEY_PATH": "/tls/key", "NIM_SSL_CERT_PATH": "/c"},
    }
    objects = render(store, "tiny", values, download_job=True)
    (container,) = objects["Job"]["spec"]["template"]["spec"]["containers"]
    names = {e["name"] for e in container["env"]}
    assert "NIM_API_KEY_FILE" in env_of(objects) and "NIM_SSL_MODE" in env_of(objects)
    assert not names & {"NIM_API_KEY_FILE", "NIM_SSL_MODE", "NIM_SSL_KEY_PATH"}
    assert "NIM_MODEL_PROFILE" in names


def test_without_the_download_job_pods_may_download(store):
    objects = render(store, QWEN)
    assert "Job" not in objects
    assert "NIM_DISABLE_MODEL_DOWNLOAD" not in env_of(objects)


def test_download_job_keeps_a_disable_download_value_from_the_values(store):
    objects = render(store, QWEN, {"env": {"NIM_DISABLE_MODEL_DOWNLOAD": "0"}}, download_job=True)
    assert env_of(objects)["NIM_DISABLE_MODEL_DOWNLOAD"] == "0"


@pytest.mark.parametrize(
    "values",
    [{"persistence": {"enabled": False}}, TWO_NODES],
    ids=["no-claim", "a-claim-per-pod"],
)
def test_download_job_needs_a_shared_claim(store, values):
    with pytest.raises(ConfigError, match="--download-job needs one cache claim"):
        render(store, MISTRAL, values, download_job=True)


def test_download_job_for_a_multi_node_profile_on_a_shared_claim(store):
    values = {**TWO_NODES, "persistence": {"accessMode": "ReadWriteMany"}}
    objects = render(store, MISTRAL, values, download_job=True)
    pod = objects["Job"]["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": objects["PersistentVolumeClaim"]["metadata"]["name"]
    }
    assert env_of(objects, "leader")["NIM_DISABLE_MODEL_DOWNLOAD"] == "1"
    for version in K8S_VERSIONS:
        validate(objects["Job"], version)
