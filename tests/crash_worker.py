"""`bot once` that kills itself (SIGKILL, as kill -9 would) right after the checkpoints named in argv[1].

    python tests/crash_worker.py composed,rendered,media-posted,uploaded,posted,replied

The worker is the one `bot once` builds (``bot.cli.run_once``), with a checkpoint hook injected;
the crash tests (tests/test_bot_crash.py) run this script with the environment of `bot once`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable

import typer

from bot.cli import run_once

log = logging.getLogger("bot.crash")


def kill_after(names: str) -> Callable[[str], None]:
    """A checkpoint hook that SIGKILLs this process right after any of the comma-separated ``names``."""
    wanted = {name for name in names.split(",") if name}

    def checkpoint(name: str) -> None:
        if name in wanted:
            log.warning("crash hook: killing the worker after %s", name)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)

    return checkpoint


def main(argv: list[str]) -> int:
    try:
        run_once(checkpoint=kill_after(argv[1] if len(argv) > 1 else ""))
    except typer.Exit as stop:  # run_once's errors, as `bot once` exits with them
        return stop.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
