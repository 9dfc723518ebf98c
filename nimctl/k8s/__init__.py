"""Kubernetes manifests for a model profile, rendered by nimctl itself instead of a Helm chart.

A profile already knows what its pod needs (GPUs, /dev/shm, the size of its weights), so the
manifests are computed from it plus a values file whose keys mirror NVIDIA's nim-llm chart. Plain
objects out of Python need no Helm binary or template language, and the values are validated
with one-line errors that name the key, before anything reaches a cluster. A profile spread over
several machines (hardware.nodes, or values multiNode) gets a LeaderWorkerSet instead of the
Deployment: one leader pod serving HTTP and the engine, and worker pods joining its Ray cluster.

    objects = render_manifests(profile, profile_id, load_values(path), release=..., namespace=...)
    print(dump_yaml(objects), end="")

`values` owns the values file (model, defaults, validation), `pod` the pod (container, env,
probes, resources), `objects` the Kubernetes objects that hold it. What depends on a `NIM_*`
setting is rendered from the pod's configuration (`nimctl.config.pod_config`: the values' `env:`
validated as the pod's settings, the profile with them applied); the variables themselves are
only written into the container's `env:`.
"""

from nimctl.k8s.objects import (
    LWS_WORKER_INDEX_LABEL,
    PROFILE_ID_ANNOTATION,
    PROFILE_LABEL,
    claim_name,
    default_release,
    download_job_name,
    dump_yaml,
    lws_name,
    render_manifests,
)
from nimctl.k8s.pod import GPU_RESOURCE, PORT_NAME, shm_quantity
from nimctl.k8s.values import default_values_path, load_values, merge_values, validate_values

__all__ = [
    "GPU_RESOURCE",
    "LWS_WORKER_INDEX_LABEL",
    "PORT_NAME",
    "PROFILE_ID_ANNOTATION",
    "PROFILE_LABEL",
    "claim_name",
    "default_release",
    "default_values_path",
    "download_job_name",
    "dump_yaml",
    "load_values",
    "lws_name",
    "merge_values",
    "render_manifests",
    "shm_quantity",
    "validate_values",
]
