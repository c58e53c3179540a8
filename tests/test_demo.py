"""`bot demo`, run as a new user runs it: real processes, real ports, the shipped models."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from bot.demo import port_is_free
from bot.local_mastodon import free_port

pytestmark = pytest.mark.skipif(
    not any(Path(p).is_file() for p in ("/usr/bin/fluidsynth", "/usr/local/bin/fluidsynth")),
    reason="the demo renders audio with fluidsynth (scripts/setup.sh installs it)",
)


def demo(data_dir: Path, mastodon_port: int, web_port: int, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "MASTODON_", "COMPOSER_URL"))}
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "bot.cli", "demo", "--data-dir", str(data_dir)),
            *("--mastodon-port", str(mastodon_port), "--web-port", str(web_port), *extra),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def read_until(process: subprocess.Popen, marker: str, timeout: float = 240) -> str:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    process.kill()
    raise AssertionError(f"never saw {marker!r}; output:\n{''.join(seen)}")


def test_demo_answers_serves_the_archive_and_stops_cleanly(tmp_path: Path) -> None:
    mastodon_port, web_port = free_port(), free_port()
    process = demo(tmp_path / "demo", mastodon_port, web_port, "--no-prompt")
    try:
        output = read_until(process, "running until Ctrl-C")
    except BaseException:
        process.kill()
        raise
    assert '@listener posted: "@band play me something folk' in output
    assert "Here is your folk piece" in output
    assert "alt text: A 2" in output  # "A 20-second ..." or "A 21-second ..."
    piece_url = re.search(r"the archive page:\s+(\S+)", output).group(1)
    thread_url = re.search(r"the thread:\s+(\S+)", output).group(1)
    assert piece_url.startswith(f"http://127.0.0.1:{web_port}/pieces/")
    assert thread_url.startswith(f"http://127.0.0.1:{mastodon_port}/_ui/statuses/")

    page = httpx.get(piece_url, timeout=10)
    assert page.status_code == 200 and "folk" in page.text and "<audio" in page.text
    status_id = thread_url.rsplit("/", 1)[1]
    context = httpx.get(f"http://127.0.0.1:{mastodon_port}/api/v1/statuses/{status_id}/context", timeout=10).json()
    replies = [s for s in context["descendants"] if s["account"]["acct"] == "band"]
    assert len(replies) == 1 and replies[0]["media_attachments"][0]["type"] == "audio"

    process.send_signal(signal.SIGINT)  # Ctrl-C
    rest, _ = process.communicate(timeout=90)
    assert process.returncode == 0, rest
    assert "stopped." in rest
    assert port_is_free(mastodon_port) and port_is_free(web_port)
    for log in ("bot.log", "web.log"):
        assert "Traceback" not in (tmp_path / "demo" / log).read_text()
    assert "stream up" in (tmp_path / "demo" / "bot.log").read_text()  # mentions come by the stream (issue #18)

    # A second run reuses the server's state and the archive: the first piece is still there.
    again = demo(tmp_path / "demo", mastodon_port, web_port, "--exit-after-reply")
    out, _ = again.communicate(timeout=240)
    assert again.returncode == 0, out
    assert "Here is your folk piece" in out
    assert (tmp_path / "demo" / "bot.sqlite3").is_file()
    with closing(sqlite3.connect(tmp_path / "demo" / "bot.sqlite3")) as archive:
        assert archive.execute("select count(*) from compositions").fetchone()[0] == 2


def test_demo_names_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = demo(tmp_path / "demo", port, free_port(), "--exit-after-reply")
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert f"port {port} for the Mastodon server is in use" in out
    assert "--mastodon-port" in out
