"""The API-key check's cost per request, with 1 to 16 keys, in-process.

The check runs on every request but health and metrics, so it has a budget of a few
microseconds. This times one call of `ApiKeyMiddleware` (key ring included; its once-a-second
look at a key file is not in it) around an app that does nothing, against
that app called alone, with the matching key last (every key is compared whichever matches).

Run: `python -m bench.api_key [--calls N]`.
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections.abc import Callable, MutableMapping
from typing import Any

from nimctl.api.middleware import ApiKeyMiddleware
from nimctl.keys import KeyRing, parse_key_list


async def _app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    return None


def _call(app: Callable[..., Any], scope: MutableMapping[str, Any]) -> Callable[[], None]:
    def once() -> None:
        coroutine = app(scope, None, None)
        try:
            coroutine.send(None)
        except StopIteration:  # the coroutine returned (no suppress(): its cost would count)
            return

    return once


def per_call_us(once: Callable[[], None], calls: int) -> float:
    # CPU time of this thread: on a shared machine, wall time would count other processes.
    return min(timeit.repeat(once, number=calls, repeat=7, timer=time.thread_time)) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    calls = parser.parse_args().calls
    for count in (1, 4, 16):
        for named in (False, True):
            secrets = [f"sk-{i:04d}-0123456789abcdefghijklmnopqrstuv" for i in range(count)]
            value = ",".join(f"k{i}:{s}" if named else s for i, s in enumerate(secrets))
            middleware = ApiKeyMiddleware(_app, KeyRing(parse_key_list(value)))
            scope = {
                "type": "http",
                "path": "/v1/chat/completions",
                "method": "POST",
                "headers": [
                    (b"host", b"localhost"),
                    (b"content-type", b"application/json"),
                    (b"authorization", b"Bearer " + secrets[-1].encode()),
                ],
            }
            alone = per_call_us(_call(_app, scope), calls)
            checked = per_call_us(_call(middleware, scope), calls)
            print(
                f"{count:2d} key(s), {'named' if named else 'unnamed':7}: "
                f"{checked - alone:5.2f} us per request for the check "
                f"({checked:.2f} us with the app, {alone:.2f} us the app alone)"
            )


if __name__ == "__main__":
    main()
