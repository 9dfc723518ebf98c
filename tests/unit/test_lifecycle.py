"""The supervisor's start-up hook: run once, after the engine started, before readiness."""

from __future__ import annotations

import asyncio

from nimctl.lifecycle import State, Supervisor
from nimctl.startup import Phase, StartupProgress


class _Engine:
    async def start(self, progress: StartupProgress) -> None:
        return None

    async def check_health(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


async def test_on_ready_runs_once_before_readiness_turns_true() -> None:
    seen: list[State] = []
    supervisor = Supervisor(
        _Engine(),  # type: ignore[arg-type]
        health_interval_s=0.01,
        on_ready=lambda: seen.append(supervisor.state),
    )
    supervisor.start()
    async with asyncio.timeout(60):
        while supervisor.state is not State.READY:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # a few health checks later it has still run once
    await supervisor.stop()
    assert seen == [State.STARTING]


async def test_a_failed_start_does_not_run_on_ready() -> None:
    class Failing(_Engine):
        async def start(self, progress: StartupProgress) -> None:
            raise RuntimeError("no memory for the KV cache")

    seen: list[State] = []
    supervisor = Supervisor(Failing(), on_ready=lambda: seen.append(supervisor.state))  # type: ignore[arg-type]
    supervisor.start()
    await asyncio.wait_for(supervisor.fatal.wait(), timeout=60)
    await supervisor.stop()
    assert seen == []


async def test_while_starting_the_reason_is_the_start_up_phase() -> None:
    class Loading(_Engine):
        def __init__(self) -> None:
            self.release = asyncio.Event()

        async def start(self, progress: StartupProgress) -> None:
            progress.enter(Phase.LOADING_WEIGHTS_AND_STARTING_ENGINE)
            await self.release.wait()

    now = [0.0]
    engine = Loading()
    supervisor = Supervisor(engine, progress=StartupProgress(clock=lambda: now[0]))  # type: ignore[arg-type]
    assert supervisor.reason == "resolving the profile"
    supervisor.start()
    async with asyncio.timeout(10):
        while supervisor.progress.status.phase is not Phase.LOADING_WEIGHTS_AND_STARTING_ENGINE:
            await asyncio.sleep(0.01)
    now[0] += 125.0
    assert await supervisor.readiness() == "loading weights and starting the engine, 2 min so far"
    engine.release.set()
    async with asyncio.timeout(10):
        while supervisor.state is not State.READY:
            await asyncio.sleep(0.01)
    assert supervisor.progress.status.phase is Phase.READY
    await supervisor.stop()
