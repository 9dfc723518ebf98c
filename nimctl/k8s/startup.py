"""How long the startup probe waits: from the profile's weight size, not a constant.

A fixed budget is wrong both ways: thirty minutes kills a pod still downloading 600 GiB, and
leaves a tiny model that hangs unnoticed for half an hour. The budget is the download at a stated
rate (left out when the weights are pre-staged or not on the Hub), plus loading them at a stated
rate, plus a fixed engine start (memory profiling, KV cache, compilation), plus the wait for the
other nodes on a multi-node profile. A values file that sets `failureThreshold` wins.
"""

from __future__ import annotations

import math

from nimctl.k8s.values import StartupProbeValues

GIB = 2**30
MB = 10**6  # the rates are in MB/s, as network and disk rates are quoted


def startup_budget_seconds(
    probe: StartupProbeValues, weights_gib: float, *, download: bool, cluster_start_s: int = 0
) -> float:
    """Seconds a start may take before the kubelet gives up on it."""
    size = weights_gib * GIB
    fetch = size / (probe.downloadMBps * MB) if download else 0.0
    return fetch + size / (probe.loadMBps * MB) + probe.engineStartSeconds + cluster_start_s


def startup_failure_threshold(
    probe: StartupProbeValues, weights_gib: float, *, download: bool, cluster_start_s: int = 0
) -> int:
    """The values' `failureThreshold` if set, else enough probe periods after the initial
    delay to cover the budget."""
    if probe.failureThreshold is not None:
        return probe.failureThreshold
    budget = startup_budget_seconds(
        probe, weights_gib, download=download, cluster_start_s=cluster_start_s
    )
    return max(1, math.ceil((budget - probe.initialDelaySeconds) / probe.periodSeconds))
