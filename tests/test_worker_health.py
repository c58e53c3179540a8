"""`bot run`'s health and Prometheus metrics, and its quiet log when idle (a real mastodon_mock, SQLite)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from bot.local_mastodon import free_port
from bot.migrate import upgrade
from bot.worker.base import TickReport
from bot.worker.health import WorkerHealth, serve
from tests.bot_helpers import bot_env, make_models, mock_mastodon

BOT = [sys.executable, "-m", "bot.cli"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mock_mastodon(tmp_path_factory.mktemp("mock")) as running:
        yield running


def metric(text: str, name: str) -> float:
    """The value of one sample (``name`` with its labels) in Prometheus text."""
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    assert found, f"{name} not in\n{text}"
    return float(found[1])


def test_bot_run_serves_health_and_metrics_and_logs_nothing_while_idle(server, tmp_path):
    server.reset()
    models = make_models(tmp_path / "models", genres=("folk",))
    url = f"sqlite:///{tmp_path / 'bot.sqlite3'}"
    upgrade(url)
    port = free_port()
    # Ticks far shorter than a tick takes: APScheduler warned "skipped: maximum number of running instances"
    env = bot_env(server, tmp_path, url, models, BOT_INTERVAL_SECONDS="0.05")
    process = subprocess.Popen(
        [*BOT, "run", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 60
            ticks = 0.0
            while time.monotonic() < deadline and ticks < 20:
                time.sleep(0.2)
                try:
                    ticks = metric(client.get("/metrics").text, 'bot_ticks_total{result="ok"}')
                except (httpx.TransportError, AssertionError):
                    assert process.poll() is None, process.communicate()[1][-3000:]
            assert ticks >= 20, "the worker did not tick"
            health = client.get("/healthz")
            assert health.status_code == 200 and health.json()["status"] == "ok"
            assert client.head("/healthz").status_code == 200
            text = client.get("/metrics").text
            assert client.get("/metrics").headers["content-type"].startswith("text/plain")
            assert metric(text, "bot_tick_in_progress") in (0.0, 1.0)
            assert metric(text, "bot_tick_seconds_count") >= 20
            assert metric(text, 'bot_mentions_total{outcome="replied"}') == 0
            assert metric(text, "bot_last_tick_end_timestamp_seconds") > time.time() - 60
            assert client.get("/nothing").status_code == 404
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert not [line for line in lines if "tick:" in line], "an idle tick logged at INFO"
    assert not [line for line in lines if "WARNING" in line or "apscheduler" in line], lines
    assert "health and metrics on http://127.0.0.1:" in err and "bot stopped" in err
    assert len(lines) <= 6, lines  # start, the platform's identity, stop: nothing per tick


def test_a_busy_tick_is_logged_and_counted(server, tmp_path):
    server.reset()
    models = make_models(tmp_path / "models", genres=("folk",))
    url = f"sqlite:///{tmp_path / 'bot.sqlite3'}"
    upgrade(url)
    status = server.client("alice").status_post("@band folk, 2 seconds")
    done = subprocess.run([*BOT, "once"], env=bot_env(server, tmp_path, url, models), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tick: fetched 1, new 1, replied 1" in done.stderr
    assert len(server.replies_to(str(status["id"]))) == 1


def test_health_turns_503_once_the_loop_shows_no_progress():
    now = [1000.0]
    health = WorkerHealth(stale_after=30, clock=lambda: now[0])
    http = serve(health, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{http.server_address[1]}"
    try:
        assert httpx.get(base + "/healthz").status_code == 200
        health.tick_started()
        now[0] += 29
        health.passed("composed")  # a long tick that moves jobs on is alive
        now[0] += 29
        assert httpx.get(base + "/healthz").status_code == 200
        now[0] += 2
        stalled = httpx.get(base + "/healthz")
        assert stalled.status_code == 503 and stalled.json()["status"] == "stalled"
        health.tick_ended(61.0, TickReport(fetched=2, replied=1))
        assert httpx.get(base + "/healthz").status_code == 200
        text = httpx.get(base + "/metrics").text
        assert metric(text, 'bot_mentions_total{outcome="fetched"}') == 2
        assert metric(text, 'bot_job_steps_total{step="composed"}') == 1
        health.tick_ended(1.0, None)
        assert metric(httpx.get(base + "/metrics").text, 'bot_ticks_total{result="error"}') == 1
    finally:
        http.shutdown()


def test_bot_run_says_in_one_line_when_the_platform_refuses_or_is_down(server, tmp_path):
    models = make_models(tmp_path / "models", genres=("folk",))
    url = f"sqlite:///{tmp_path / 'bot.sqlite3'}"
    upgrade(url)
    refused = subprocess.run(
        [*BOT, "run"],
        env=bot_env(server, tmp_path, url, models, MASTODON_ACCESS_TOKEN="not-a-token"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), refused.stderr[-3000:]

    down = bot_env(server, tmp_path, url, models, MASTODON_API_BASE_URL=f"http://127.0.0.1:{free_port()}")
    process = subprocess.Popen(
        [*BOT, "run"], env=down | {"BOT_INTERVAL_SECONDS": "0.2"}, stderr=subprocess.PIPE, text=True
    )
    try:
        seen: list[str] = []
        while sum("tick failed" in line for line in seen) < 3:
            line = process.stderr.readline()
            assert line, "bot run stopped"
            seen.append(line)
    finally:
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=60)[1]
    assert process.returncode == 0
    assert "Traceback" not in "".join(seen) + rest
    assert all("WARNING" in line for line in seen if "tick failed" in line)
