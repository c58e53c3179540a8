"""A real mastodon_mock server in its own process, for the bot's tests, its load benchmark and the demo."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from mastodon import Mastodon

# name, display name, bio, bot flag
ACCOUNTS: list[tuple[str, str, str, bool]] = [
    ("band", "Band", "I compose piano pieces.", False),
    ("alice", "Alice", "", False),
    ("bob", "Bob", "", False),
    ("carol", "Carol", "", False),
    ("robo", "Robo", "Automated account", True),
    ("quiet", "Quiet", "<p>Please leave me be #NoBot</p>", False),
    ("shy", "Shy #nobot", "", False),
    ("eve", "Eve", "", False),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MockMastodon:
    """``python -m mastodon_mock serve`` in its own process, seeded with the accounts above."""

    def __init__(
        self,
        workdir: Path,
        accounts: Sequence[tuple[str, str, str, bool]] = (),
        port: int | None = None,
        persistent: bool = False,
        streaming: bool = True,
    ):
        """``persistent`` keeps the server's state in ``workdir`` across restarts (the demo's);
        a persistent server needs a fixed ``port``, since its stored URLs carry it. ``streaming``
        False: a server with its streaming API switched off (404, none advertised)."""
        self.workdir = workdir
        self.accounts = list(accounts) or ACCOUNTS
        self.port = port or free_port()
        self.persistent = persistent
        self.streaming = streaming
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> MockMastodon:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"domain = {_toml_string(f'127.0.0.1:{self.port}')}",
            'url_scheme = "http"',
            f"media_storage_path = {_toml_string(str(self.workdir / 'media'))}",
            "[database]",
            f"path = {_toml_string(str(self.workdir / 'mastodon.sqlite3') if self.persistent else ':memory:')}",
            "[streaming]",
            f"enabled = {'true' if self.streaming else 'false'}",
            "heartbeat_seconds = 5.0",
        ]
        for name, display, note, bot in self.accounts:
            lines += [
                "[[seed.accounts]]",
                f"username = {_toml_string(name)}",
                f"display_name = {_toml_string(display)}",
                f"note = {_toml_string(note)}",
                f"bot = {'true' if bot else 'false'}",
                f"access_token = {_toml_string(name + '_token')}",
            ]
        config = self.workdir / "mock.toml"
        config.write_text("\n".join(lines) + "\n")
        log = open(self.workdir / "mock.log", "wb")  # noqa: SIM115 - kept open for the process's life
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "mastodon_mock", "serve", "--config", str(config)),
                *(() if self.persistent else ("--in-memory",)),
                *("--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C meant for the demo must not kill the server before the bot is done
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"mastodon_mock exited: {(self.workdir / 'mock.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base_url}/api/v1/instance", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()  # never leave a half-started server holding the port
        raise TimeoutError("mastodon_mock did not start within 30 s")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None

    def client(self, username: str) -> Mastodon:
        return Mastodon(access_token=f"{username}_token", api_base_url=self.base_url, ratelimit_method="throw")

    def reset(self) -> None:
        httpx.post(f"{self.base_url}/api/v1/_mock/reset", timeout=10).raise_for_status()
        self.clear_faults()

    def fault(self, **rule: Any) -> str:
        response = httpx.post(f"{self.base_url}/api/v1/_mock/faults", json=rule, timeout=10)
        response.raise_for_status()
        return response.json()["id"]

    def clear_faults(self) -> None:
        response = httpx.get(f"{self.base_url}/api/v1/_mock/faults", timeout=10)
        if response.status_code == 200:
            for rule in response.json():
                httpx.delete(f"{self.base_url}/api/v1/_mock/faults/{rule['id']}", timeout=10)

    def replies_to(self, status_id: str) -> list[dict]:
        """The bot's statuses answering ``status_id`` (seen by the bot itself, so direct ones count too)."""
        context = self.client("band").status_context(status_id)
        return [
            s
            for s in context["descendants"]
            if s["account"]["acct"] == "band" and str(s["in_reply_to_id"]) == str(status_id)
        ]

    def bot_statuses(self) -> list[dict]:
        band = self.client("band")
        me = band.account_verify_credentials()
        return list(band.account_statuses(me["id"], limit=40))


@contextmanager
def mock_mastodon(
    workdir: Path, accounts: Sequence[tuple[str, str, str, bool]] = (), streaming: bool = True
) -> Iterator[MockMastodon]:
    server = MockMastodon(workdir, accounts, streaming=streaming).start()
    try:
        yield server
    finally:
        server.stop()
