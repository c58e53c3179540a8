"""``bot demo``: the whole product on one machine, with nothing to sign up for.

A local Mastodon-compatible server (mastodon_mock, its state kept in the demo folder), the
archive database (SQLite), the archive web (``bot web``) and the bot worker (``bot run``,
composing in-process with the shipped models) run as separate processes started by the
same entry points the containers use. A demo listener mentions the bot, the reply is shown
when it arrives, and then the user can type requests of their own until Ctrl-C.
"""

from __future__ import annotations

import html
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from bot.local_mastodon import MockMastodon

BOT = "band"
LISTENER = "listener"
YOU = "you"
# name, display name, bio, bot flag (the bot sets its own flag when it starts)
DEMO_ACCOUNTS: list[tuple[str, str, str, bool]] = [
    (BOT, "Band", "I compose piano pieces on request: mention me with a genre.", False),
    (LISTENER, "Demo Listener", "A listener who asks for a tune when the demo starts.", False),
    (YOU, "You", "The account the demo posts your own requests from.", False),
]
SAMPLE_REQUEST = f"@{BOT} play me something folk, 20 seconds please"
LINK = re.compile(r'href="([^"]+/pieces/[^"]+)"')


class DemoError(Exception):
    """The demo cannot start or a part of it stopped; the message says which and where its log is."""


class NoReply(DemoError):
    """The bot did not answer in time (it may have chosen silence, e.g. past a limit)."""


class Stopping(Exception):
    """Ctrl-C or SIGTERM arrived while the demo was waiting."""


@dataclass
class Child:
    """One of the demo's processes, with its output in a log file."""

    name: str
    process: subprocess.Popen
    log: Path

    def tail(self) -> str:
        return log_tail(self.log)


def log_tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Demo:
    data_dir: Path
    mastodon_port: int = 3000
    web_port: int = 8080
    # the bot hears mentions through the server's stream, as in production: polling is only its catch-up
    interval_seconds: float | None = None
    say: Callable[..., None] = print
    stopping: threading.Event = field(default_factory=threading.Event)
    children: list[Child] = field(default_factory=list)
    mastodon: MockMastodon | None = None

    @property
    def archive_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def env(self) -> dict[str, str]:
        """The bot's settings for every process: this machine's mock server, a SQLite archive, no composer URL."""
        assert self.mastodon is not None
        env = {k: v for k, v in os.environ.items() if k != "COMPOSER_URL" and k != "BOT_ENV_FILE"}
        env.update(
            BOT_PLATFORM="mastodon",
            MASTODON_API_BASE_URL=self.mastodon.base_url,
            MASTODON_ACCESS_TOKEN=f"{BOT}_token",
            BOT_DATA_DIR=str(self.data_dir),
            DATABASE_URL=f"sqlite:///{self.data_dir / 'bot.sqlite3'}",
            MEDIA_DIR=str(self.data_dir / "media"),
            ARCHIVE_BASE_URL=self.archive_url,
            BOT_WORKER_ID="demo-worker",
            BOT_PER_ACCOUNT_PER_HOUR=env.get("BOT_PER_ACCOUNT_PER_HOUR", "20"),
            PYTHONUNBUFFERED="1",
        )
        env.pop("BOT_INTERVAL_SECONDS", None)
        env.pop("BOT_STREAM", None)
        if self.interval_seconds is not None:
            env["BOT_INTERVAL_SECONDS"] = str(self.interval_seconds)
        return env

    # -- starting and stopping -------------------------------------------------------------

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for port, what, option in (
            (self.mastodon_port, "the Mastodon server", "--mastodon-port"),
            (self.web_port, "the archive web", "--web-port"),
        ):
            if not port_is_free(port):
                raise DemoError(f"port {port} for {what} is in use: stop what uses it or pass {option}")
        self.say(f"starting a local Mastodon server on http://127.0.0.1:{self.mastodon_port} ...")
        server_dir = self.data_dir / "mastodon"
        self.mastodon = MockMastodon(server_dir, DEMO_ACCOUNTS, port=self.mastodon_port, persistent=True)
        try:
            self.mastodon.start()
        except (RuntimeError, TimeoutError) as exc:
            raise DemoError(f"the Mastodon server did not start ({exc}); see {server_dir / 'mock.log'}") from None
        self.run_to_end("migrate", "db", "upgrade")
        self.say(f"starting the archive web on {self.archive_url} ...")
        self.spawn("web", "web", "--host", "127.0.0.1", "--port", str(self.web_port))
        self.wait_http(f"{self.archive_url}/", "web")
        self.say("starting the bot worker (composing in-process with the shipped models) ...")
        self.spawn("bot", "run")

    def bot_command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "bot.cli", *args]

    def spawn(self, name: str, *args: str) -> Child:
        log = self.data_dir / f"{name}.log"
        out = open(log, "ab")  # noqa: SIM115 - the child writes to it for its whole life
        process = subprocess.Popen(
            self.bot_command(*args), env=self.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def run_to_end(self, name: str, *args: str) -> None:
        log = self.data_dir / f"{name}.log"
        with open(log, "ab") as out:  # its own session: a Ctrl-C is the demo's to handle
            done = subprocess.run(
                self.bot_command(*args), env=self.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.check()
        if done.returncode != 0:
            raise DemoError(f"`bot {' '.join(args)}` failed; see {log}:\n{log_tail(log)}")

    def wait_http(self, url: str, name: str, timeout: float = 60.0, ok_only: bool = False) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            try:
                if httpx.get(url, timeout=2).status_code < (300 if ok_only else 500):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise DemoError(f"{name} did not answer at {url} within {timeout:g} s")

    def check(self) -> None:
        """Raise if the user asked to stop or one of the processes died."""
        if self.stopping.is_set():
            raise Stopping
        if self.mastodon is not None and not self.mastodon.running:
            raise DemoError(f"the Mastodon server stopped; see {self.data_dir / 'mastodon' / 'mock.log'}")
        for child in self.children:
            if child.process.poll() is not None:
                raise DemoError(
                    f"the {child.name} process exited with status {child.process.returncode}; "
                    f"the end of {child.log}:\n{child.tail()}"
                )

    def stop(self) -> None:
        """SIGTERM to each process (the worker finishes its tick first), newest first; then the server."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.process.wait(60)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        self.children.clear()
        if self.mastodon is not None:
            self.mastodon.stop()
            self.mastodon = None

    # -- talking to the bot ----------------------------------------------------------------

    def mention(self, username: str, text: str) -> dict[str, Any]:
        assert self.mastodon is not None
        return self.mastodon.client(username).status_post(text, visibility="public")

    def wait_for_reply(self, username: str, status: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        """The bot's reply to ``status``, polled from the thread as the requester sees it."""
        assert self.mastodon is not None
        client = self.mastodon.client(username)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            for reply in client.status_context(status["id"])["descendants"]:
                if reply["account"]["acct"] == BOT and str(reply["in_reply_to_id"]) == str(status["id"]):
                    return reply
            time.sleep(0.5)
        raise NoReply(f"no reply within {timeout:g} s; see {self.data_dir / 'bot.log'}")

    def thread_url(self, status: dict[str, Any]) -> str:
        assert self.mastodon is not None
        return f"{self.mastodon.base_url}/_ui/statuses/{status['id']}"

    def show(self, status: dict[str, Any], reply: dict[str, Any], seconds: float) -> None:
        text = plain_text(reply["content"])
        self.say(f"\nthe reply arrived after {seconds:.1f} s:\n")
        self.say("  " + text.replace("\n", "\n  "))
        for media in reply.get("media_attachments", []):
            self.say(f"  [{media['type']}] {media.get('url')}")
            if media.get("description"):
                self.say(f"  alt text: {media['description']}")
        link = LINK.search(reply["content"])
        self.say(f"\n  the thread:        {self.thread_url(status)}")
        if link:
            page = html.unescape(link.group(1))
            self.wait_http(page, "the archive page", ok_only=True)  # listed once the worker records the reply
            self.say(f"  the archive page:  {page}")

    def ask(self, username: str, text: str) -> dict[str, Any]:
        started = time.monotonic()
        status = self.mention(username, text)
        self.say(f'\n@{username} posted: "{text}"  (waiting for @{BOT} ...)')
        reply = self.wait_for_reply(username, status)
        self.show(status, reply, time.monotonic() - started)
        return reply

    def instructions(self) -> str:
        assert self.mastodon is not None
        base = self.mastodon.base_url
        return "\n".join(
            [
                "",
                f"archive:            {self.archive_url}/   (every piece, feeds, /api/v1/docs)",
                f"Mastodon server:    {base}/_ui/   (tab 'Mock Login', pick an account, to read the threads)",
                f"logs:               {self.data_dir}/{{bot,web,migrate}}.log",
                "",
                f"Mention the bot yourself: type a request below (it is posted as @{YOU}), or from a shell:",
                f"  curl -H 'Authorization: Bearer {YOU}_token' -d 'status=@{BOT} a calm classical piece, 1 min' "
                f"{base}/api/v1/statuses",
            ]
        )


def plain_text(content: str) -> str:
    text = re.sub(r"<br\s*/?>|</p>\s*<p>", "\n", content)
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def read_requests(stream: IO[str], demo: Demo, stop: threading.Event) -> None:
    """Post each line the user types as a mention of the bot, and show the reply."""
    while not stop.is_set():
        demo.say(f"\nyour request for @{BOT} (Enter to post, Ctrl-C to quit): ", end="", flush=True)
        line = stream.readline()
        if not line:  # end of input: keep serving until Ctrl-C
            return
        text = line.strip()
        if not text:
            continue
        if not re.match(rf"@{BOT}\b", text):
            text = f"@{BOT} {text}"
        try:
            demo.ask(YOU, text)
        except Stopping:
            return
        except NoReply as exc:  # e.g. past the per-account limit the bot stays silent, as it should
            demo.say(f"{exc}; the demo goes on")
        except DemoError as exc:  # a part of the demo died: the main loop reports it and stops
            demo.say(f"error: {exc}")
            return
        except Exception as exc:  # a refused post (e.g. too long) must not end the demo
            demo.say(f"could not post that: {exc}")


def run(
    data_dir: Path,
    mastodon_port: int = 3000,
    web_port: int = 8080,
    exit_after_reply: bool = False,
    interactive: bool | None = None,
    say: Callable[..., None] = print,
) -> int:
    """Run the demo until Ctrl-C or SIGTERM (or the first reply); the exit status."""
    demo = Demo(data_dir, mastodon_port, web_port, say=say)
    stop = demo.stopping

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        demo.start()
        demo.ask(LISTENER, SAMPLE_REQUEST)
        if exit_after_reply:
            return 0
        say(demo.instructions())
        if interactive is None:
            interactive = sys.stdin.isatty()
        if interactive:
            threading.Thread(target=read_requests, args=(sys.stdin, demo, stop), daemon=True).start()
        else:
            say("\nrunning until Ctrl-C ...")
        while not stop.wait(1.0):
            demo.check()
        return 0
    except Stopping:
        return 0
    except DemoError as exc:  # on stderr, like every command's error, so a script sees it apart from the chat
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean shutdown short
        say("\nstopping: the bot finishes its tick, then the web and the Mastodon server stop ...")
        demo.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        say("stopped.")
