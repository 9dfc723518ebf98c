"""Poll a probe endpoint every 50 ms until stdin closes; print the latencies (s) as JSON.

A process of its own, so that the load generator's event loop and GIL in the harness do not
delay the probe and inflate what is measured.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import httpx


def main(url: str) -> None:
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    samples: list[float] = []
    with httpx.Client(timeout=10) as client:
        while not done.wait(0.05):
            start = time.perf_counter()
            client.get(url).raise_for_status()
            samples.append(time.perf_counter() - start)
    json.dump(samples, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
