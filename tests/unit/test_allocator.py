"""The allocator tuning that `serve` applies at its edge (nimctl/allocator.py)."""

from __future__ import annotations

import subprocess
import sys

from nimctl.allocator import (
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    MMAP_THRESHOLD,
    TRIM_THRESHOLD,
    wanted,
)


def test_both_thresholds_are_raised_by_default():
    assert wanted({}) == {M_MMAP_THRESHOLD: MMAP_THRESHOLD, M_TRIM_THRESHOLD: TRIM_THRESHOLD}


def test_a_value_exported_for_glibc_wins():
    assert wanted({"MALLOC_TRIM_THRESHOLD_": "0"}) == {}
    assert wanted({"MALLOC_MMAP_THRESHOLD_": "131072"}) == {}


def test_big_buffers_are_reused_once_applied():
    """In a fresh process: 60 MB held and freed, ten times. With glibc's defaults the freed top of
    the heap passes the trim threshold and goes back to the kernel, so each round faults it in
    again; with the thresholds raised it is reused."""
    probe = """
import resource, sys
from nimctl.allocator import keep_large_buffers
if sys.argv[1] == "tuned":
    assert keep_large_buffers({})
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def request():  # an image request's peak: three 20 MB buffers at once, then all freed
    held = [b"x" * (20 * 2**20) for _ in range(3)]
    del held
for _ in range(3):  # glibc's dynamic thresholds settle after the first frees
    request()
before = faults()
for _ in range(10):
    request()
print(faults() - before)
"""
    counts = {}
    for mode in ("default", "tuned"):
        out = subprocess.run(
            [sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True
        )
        counts[mode] = int(out.stdout.strip())
    # 10 x 60 MB = 153,600 pages: faulted afresh each time by default, reused when tuned.
    assert counts["default"] > 50_000, counts
    assert counts["tuned"] < 5_000, counts
