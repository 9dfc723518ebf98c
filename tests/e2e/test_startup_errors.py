"""Bad configuration found while the engine starts still ends the process, loudly."""

from __future__ import annotations

from tests.support.server import start_server


def test_bad_passthrough_args_exit_2_with_one_line(tmp_path):
    log = tmp_path / "nimctl.log"
    try:
        start_server("tiny", log, env={"NIM_PASSTHROUGH_ARGS": "--no-such-flag 1"})
    except RuntimeError as exc:
        message = str(exc)
    else:
        raise AssertionError("the server became ready with an invalid NIM_PASSTHROUGH_ARGS")
    assert "exited with 2" in message
    assert "invalid NIM_PASSTHROUGH_ARGS='--no-such-flag 1'" in log.read_text()
