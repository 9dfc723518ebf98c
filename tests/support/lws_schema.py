"""A JSON schema for the LeaderWorkerSet object `nimctl k8s` renders for multi-node profiles.

LeaderWorkerSet (leaderworkerset.x-k8s.io/v1) is a CRD, which the Kubernetes schemas bundled by
kubernetes-validate lack, and its CRD file cannot be fetched here (the tests run offline, and
nothing downloaded is committed). So this schema is written by hand from the LWS v1 API
reference (kubernetes-sigs/lws: site/content/en/docs/reference/leaderworkerset.v1.md and
api/leaderworkerset/v1/leaderworkerset_types.go, with their kubebuilder enums and minimums).

It covers the LWS-specific levels: every one has additionalProperties false, so a misspelt or
misplaced field fails as it would against the CRD's structural schema. The two pod templates
are only required to be objects here: the tests check them against the real Kubernetes schema
by wrapping each in a core PodTemplate.
"""

from __future__ import annotations

from typing import Any

_INT32 = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
# intstr.IntOrString: an absolute number or a percentage.
_INT_OR_PERCENT = {
    "oneOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": r"^[0-9]+%$"},
    ]
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

LWS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "leaderworkerset.x-k8s.io/v1"},
        "kind": {"const": "LeaderWorkerSet"},
        # The part of ObjectMeta nimctl writes.
        "metadata": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 63},
                "namespace": {"type": "string"},
                "labels": _STRING_MAP,
                "annotations": _STRING_MAP,
            },
        },
        "spec": {
            "type": "object",
            "required": ["leaderWorkerTemplate"],
            "additionalProperties": False,
            "properties": {
                # Default 1; the scale subresource's specpath, which an HPA sets.
                "replicas": _INT32,
                "leaderWorkerTemplate": {
                    "type": "object",
                    "required": ["workerTemplate"],
                    "additionalProperties": False,
                    "properties": {
                        # Optional: the worker template serves the leader too when absent.
                        "leaderTemplate": {"type": "object"},
                        "workerTemplate": {"type": "object"},
                        # Pods per group, the leader included; default 1.
                        "size": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
                        # Default RecreateGroupOnPodRestart; "Default" is the deprecated name
                        # of None, RecreateGroupAfterStart the newest value.
                        "restartPolicy": {
                            "enum": [
                                "RecreateGroupOnPodRestart",
                                "RecreateGroupAfterStart",
                                "None",
                                "Default",
                            ]
                        },
                        "subGroupPolicy": {
                            "type": "object",
                            "required": ["subGroupSize"],
                            "additionalProperties": False,
                            "properties": {
                                "subGroupPolicyType": {"enum": ["LeaderWorker", "LeaderExcluded"]},
                                "subGroupSize": {"type": "integer", "minimum": 1},
                            },
                        },
                        # Newer releases: per-pod claims like a StatefulSet's.
                        "volumeClaimTemplates": {"type": "array", "items": {"type": "object"}},
                        "persistentVolumeClaimRetentionPolicy": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "whenDeleted": {"enum": ["Retain", "Delete"]},
                                "whenScaled": {"enum": ["Retain", "Delete"]},
                            },
                        },
                    },
                },
                "rolloutStrategy": {
                    "type": "object",
                    "required": ["type"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"enum": ["RollingUpdate"]},
                        "rollingUpdateConfiguration": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "partition": _INT32,
                                "maxUnavailable": _INT_OR_PERCENT,
                                "maxSurge": _INT_OR_PERCENT,
                            },
                        },
                    },
                },
                # Default LeaderCreated: workers start with the leader, not once it is ready.
                "startupPolicy": {"enum": ["LeaderCreated", "LeaderReady"]},
                "networkConfig": {
                    "type": "object",
                    "required": ["subdomainPolicy"],
                    "additionalProperties": False,
                    "properties": {"subdomainPolicy": {"enum": ["Shared", "UniquePerReplica"]}},
                },
            },
        },
    },
}
