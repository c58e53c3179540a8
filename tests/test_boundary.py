"""The line between composer and bot: the bot reaches the composer only through its contract and client.

A worker pointed at a remote composer, and the archive web, must run with none of the
composer's heavy libraries importable at all: the tests run them in a process where
importing torch (or music21, the MIDI readers, the renderer's libraries) raises.
"""

from __future__ import annotations

import ast
import base64
import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from bot.db import MentionRequest, make_engine, session_factory
from bot.local_mastodon import free_port
from composer.client import HttpComposerClient
from composer.contract import ComposedPiece, MusicSummary
from tests.bot_helpers import bot_env, make_models, mock_mastodon

ROOT = Path(__file__).resolve().parents[1]
# What only the composer extra installs: none of it may load in a bot or web process.
COMPOSER_ONLY = ("torch", "numpy", "music21", "pretty_midi", "mido", "safetensors", "scipy", "pydub", "soundfile")
ALLOWED_FROM_COMPOSER = {"composer.contract", "composer.client"}
BLOCK = f"import sys\nfor name in {COMPOSER_ONLY!r}:\n    sys.modules[name] = None  # importing it now raises\n"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def composer_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "composer":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "composer"}
    return found


def test_the_bot_imports_only_the_composers_contract_and_client():
    offenders = {
        str(path.relative_to(ROOT)): sorted(composer_imports(path) - ALLOWED_FROM_COMPOSER)
        for path in sorted((ROOT / "bot").rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_contract_and_http_client_import_nothing_but_the_standard_library_and_httpx():
    code = BLOCK + "import composer.contract, composer.client\nprint(sorted(m for m in sys.modules if 'composer' in m))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['composer', 'composer.client', 'composer.contract']"


def test_the_archive_web_serves_pages_without_the_composer_libraries(tmp_path):
    code = BLOCK + (
        "from fastapi.testclient import TestClient\n"
        "from bot.config import load_settings\n"
        "from bot.migrate import upgrade\n"
        "from bot.web import create_app\n"
        "settings = load_settings(require_platform=False)\n"
        "upgrade(settings.resolved_database_url)\n"
        "with TestClient(create_app(settings, genre_catalog=list)) as client:\n"
        "    for path in ('/', '/genres', '/stats', '/feed.rss', '/api/v1/pieces', '/healthz'):\n"
        "        assert client.get(path).status_code == 200, path\n"
        "print('torch' in sys.modules and sys.modules['torch'] is not None)\n"
    )
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'web.sqlite3'}", "MEDIA_DIR": str(tmp_path / "media")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env={**_base_env(), **env}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "False"


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "MASTODON_", "TWITTER_", "COMPOSER_"))}


@pytest.fixture(scope="module")
def composer_service(tmp_path_factory):
    """A real composer service on tiny models, as `composer serve` runs it; yields its URL.

    Another test process may take the free port first (the service needs seconds to bind):
    then this one exits, or another server answers, and the fixture starts again elsewhere."""
    models = make_models(tmp_path_factory.mktemp("models"))
    log = tmp_path_factory.mktemp("logs") / "composer.log"
    for _ in range(3):
        port = free_port()
        with log.open("w") as sink:
            service = subprocess.Popen(
                [
                    *(sys.executable, "-m", "composer.cli", "serve", "--port", str(port), "--models-dir", str(models)),
                    *("--threads", "1", "--log-level", "warning"),
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        if _ready(url, service):
            try:
                yield url
            finally:
                service.terminate()
                service.wait(30)
            return
        service.terminate()
        service.wait(30)
    pytest.fail(f"the composer service never became ready: {log.read_text()[-3000:]}")


def _ready(url: str, service: subprocess.Popen) -> bool:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and service.poll() is None:
        try:
            answer = httpx.get(f"{url}/healthz", timeout=1)
            if answer.status_code == 200 and "max_batch" in answer.json():  # the composer's, not another server's
                return service.poll() is None
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    return False


def test_the_service_sends_the_finished_piece_audio_picture_and_summary(composer_service):
    with HttpComposerClient(composer_service) as client:
        piece = client.compose("folk", 3, seed=11, audio_format="mp3", pianoroll=True)
        plain = client.compose("folk", 3, seed=11)
    assert isinstance(piece, ComposedPiece) and isinstance(piece.summary, MusicSummary)
    assert piece.audio[:3] == b"ID3" or piece.audio[:2] == b"\xff\xfb"
    assert piece.pianoroll.startswith(b"\x89PNG") and piece.audio_mime == "audio/mpeg"
    assert piece.summary.notes > 0 and piece.summary.notes_per_second == pytest.approx(
        piece.summary.notes / piece.seconds
    )
    # the same seed gives the same piece; audio and picture only when asked
    assert (plain.midi, plain.summary) == (piece.midi, piece.summary)
    assert plain.audio is None and plain.pianoroll is None
    # how long the audio took to render travels with it (the bot's "render" stage); none without audio
    assert piece.render_seconds is not None and piece.render_seconds > 0
    assert plain.render_seconds is None


def test_a_piece_composed_in_process_says_how_long_its_audio_took(tmp_path):
    from composer.serving.local import LocalComposerClient

    composer = LocalComposerClient(models_dir=make_models(tmp_path / "models", genres=("folk",)))
    piece = composer.compose("folk", 3, seed=11, audio_format="mp3")
    plain = composer.compose("folk", 3, seed=11)
    assert piece.audio is not None and piece.render_seconds is not None and piece.render_seconds > 0
    assert plain.render_seconds is None


class OldComposer(BaseHTTPRequestHandler):
    """A composer from before render_seconds: its answer lacks the field."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps(
            {
                "id": "old",
                "genre": "folk",
                "seed": 1,
                "model_version": "v1",
                "events": 2,
                "seconds": 1.0,
                "midi": base64.b64encode(b"MThd").decode(),
                "audio": base64.b64encode(b"ID3").decode(),
                "audio_mime": "audio/mpeg",
                "summary": {"notes": 1, "notes_per_second": 1.0},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def test_a_composer_older_than_render_seconds_still_answers():
    server = ThreadingHTTPServer(("127.0.0.1", 0), OldComposer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with HttpComposerClient(f"http://127.0.0.1:{server.server_port}") as client:
            piece = client.compose("folk", 1, seed=1, audio_format="mp3")
    finally:
        server.shutdown()
        server.server_close()
    assert piece.audio == b"ID3" and piece.render_seconds is None


def test_a_worker_with_composer_url_answers_without_the_composer_libraries(composer_service, tmp_path):
    """`bot once` with COMPOSER_URL set, in a process where torch and the MIDI libraries cannot load."""
    with mock_mastodon(tmp_path / "mock") as server:
        url = f"sqlite:///{tmp_path / 'bot.sqlite3'}"
        env = bot_env(server, tmp_path, url, tmp_path / "no-models", COMPOSER_URL=composer_service)
        status_id = str(server.client("alice").status_post("@band pop, 3 seconds, seed 42")["id"])
        once = [sys.executable, "-c", BLOCK + "from bot.cli import app\napp(['once'])"]
        upgraded = subprocess.run([sys.executable, "-m", "bot.cli", "db", "upgrade"], env=env, capture_output=True)
        assert upgraded.returncode == 0, upgraded.stderr[-2000:]
        # A job whose compose call failed (a busy machine) is retried at the next tick: up to three ticks.
        for _ in range(3):
            done = subprocess.run(once, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
            assert done.returncode == 0, done.stderr[-3000:]
            if server.replies_to(status_id):
                break
            time.sleep(1)
        replies = server.replies_to(status_id)
        assert len(replies) == 1, done.stderr[-3000:]
        (reply,) = replies
        assert "pop model v1" in reply["content"] and reply["media_attachments"]
        # the alt text, from the summary the composer sent (a piece ends on a time shift: 3 or 4 s)
        assert re.match(
            r"A [34]-second pop piano piece composed by a neural network: \w",
            alt := (reply["media_attachments"][0]["description"] or ""),
        ), alt
    assert (tmp_path / "media").is_dir() and any((tmp_path / "media").rglob("*.png"))
    # the audio's render time came over HTTP: the job row's render stage holds it, apart from compose
    engine = make_engine(url)
    with session_factory(engine)() as session:
        (job,) = session.scalars(select(MentionRequest))
    engine.dispose()
    stages = job.stage_seconds
    assert stages["render_audio"] > 0 and stages["render"] >= stages["render_audio"], stages
    assert stages["compose"] >= 0, stages
