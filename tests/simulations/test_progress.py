"""The simulation's progress output: a bar on a terminal, plain lines in a log file."""

from __future__ import annotations

import io

from p2pfl.sim.runner import Progress


def test_redirected_progress_is_one_line_per_round_without_carriage_returns() -> None:
    log = io.StringIO()  # not a TTY, like `p2pfl sim ... 2> log`
    progress = Progress(total=4 * 5, quiet=False, stream=log, steps=5)  # 4 peers, 5 rounds
    for done in range(0, 21):
        progress.update(done, "online 4/4")
        progress.update(done)  # polled again without progress: nothing more is written
    progress.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert [f"progress: {r}/5 rounds ({20 * r}%)" for r in range(1, 6)] == [
        ln.rsplit(" ", 1)[0] for ln in lines
    ]


def test_a_terminal_gets_a_redrawn_bar() -> None:
    tty = io.StringIO()
    progress = Progress(total=10, quiet=False, stream=tty, steps=5, tty=True)
    progress.update(5)
    progress.close()
    assert tty.getvalue().startswith("\r[") and tty.getvalue().endswith("\n")


def test_quiet_progress_writes_nothing() -> None:
    out = io.StringIO()
    progress = Progress(total=10, quiet=True, stream=out, tty=True)
    progress.update(10)
    progress.close()
    assert "" == out.getvalue()
