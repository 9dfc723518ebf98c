"""The start-up progress object: phases, the readable line, the rate-limited log."""

from __future__ import annotations

import logging

import pytest

from nimctl.startup import Phase, StartupProgress, download_detail, duration

GIB = 2**30


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_start_begins_resolving_the_profile_with_no_fraction() -> None:
    status = StartupProgress(clock=Clock()).status
    assert status.phase is Phase.RESOLVING_PROFILE
    assert status.fraction is None
    assert status.describe() == "resolving the profile"


def test_the_download_line_names_bytes_percent_and_time_left() -> None:
    progress = StartupProgress(clock=Clock())
    progress.enter(Phase.DOWNLOADING_WEIGHTS)
    progress.download(int(1.2 * GIB), int(4.5 * GIB), bytes_per_s=3.3 * GIB / 40)
    status = progress.status
    assert status.phase is Phase.DOWNLOADING_WEIGHTS
    assert status.fraction == pytest.approx(1.2 / 4.5)
    assert status.describe() == "downloading weights, 1.2 of 4.5 GiB (27 %), about 40 s left"


@pytest.mark.parametrize(
    ("done", "total", "rate", "text"),
    [
        (0, 3 * 2**20, 0.0, "0.0 of 3.0 MiB (0 %)"),  # nothing moved yet: no estimate
        (3 * 2**20, 3 * 2**20, 1e6, "3.0 of 3.0 MiB (100 %)"),
        (512, 2048, 100.0, "0.5 of 2.0 KiB (25 %), about 15 s left"),
        (0, 0, 0.0, "0.0 of 0.0 B"),
    ],
)
def test_download_detail(done: int, total: int, rate: float, text: str) -> None:
    assert download_detail(done, total, rate) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0 s"), (40, "40 s"), (89, "89 s"), (200, "3 min"), (3900, "1 h 05 min")],
)
def test_duration_is_coarse(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_fractions_are_clamped_and_a_new_phase_resets_them() -> None:
    progress = StartupProgress(clock=Clock())
    progress.enter(Phase.DOWNLOADING_WEIGHTS)
    progress.update(1.7)
    assert progress.status.fraction == 1.0
    progress.enter(Phase.LOADING_WEIGHTS_AND_STARTING_ENGINE)
    assert progress.status.fraction is None
    assert progress.status.detail == ""


def test_phases_are_logged_at_once_and_progress_at_most_every_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log = logging.getLogger("test.startup")
    progress = StartupProgress(clock=clock, log=log, log_interval_s=5.0)
    with caplog.at_level(logging.INFO, logger="test.startup"):
        clock.now += 2.0
        progress.enter(Phase.DOWNLOADING_WEIGHTS, "0.0 of 1.0 GiB (0 %)", 0.0)
        for step in range(1, 11):  # ten updates, one a second
            clock.now += 1.0
            progress.update(step / 10, f"{step / 10:.1f} of 1.0 GiB")
        clock.now += 0.5
        progress.enter(Phase.WARMING_UP)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "start-up: downloading weights, 0.0 of 1.0 GiB (0 %) (resolving the profile took 2.0 s)",
        "start-up: downloading weights, 0.5 of 1.0 GiB",  # 5 s after the phase began
        "start-up: downloading weights, 1.0 of 1.0 GiB",  # 5 s later
        "start-up: warming up (downloading weights took 10.5 s)",
    ]
    # Every update reached the status, logged or not.
    assert progress.status.phase is Phase.WARMING_UP


def test_every_phase_has_a_text_and_a_distinct_label() -> None:
    assert len({p.value for p in Phase}) == len(Phase)
    assert all(p.text for p in Phase)


def test_a_long_phase_without_progress_says_how_long_it_has_run() -> None:
    clock = Clock()
    progress = StartupProgress(clock=clock)
    progress.enter(Phase.LOADING_WEIGHTS_AND_STARTING_ENGINE)
    clock.now += 9.0
    assert progress.describe() == "loading weights and starting the engine"
    clock.now += 351.0
    assert progress.describe() == "loading weights and starting the engine, 6 min so far"
    # A measured phase says how far it is instead.
    progress.enter(Phase.DOWNLOADING_WEIGHTS)
    progress.download(GIB, 2 * GIB, 0.0)
    clock.now += 60.0
    assert progress.describe() == "downloading weights, 1.0 of 2.0 GiB (50 %)"
