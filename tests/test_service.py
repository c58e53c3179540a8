"""The composer service over real HTTP (uvicorn on 127.0.0.1), and its two clients."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from composer.client import HttpComposerClient, composer_client_from_env
from composer.codec import events
from composer.codec.midi import load_notes, midi_bytes, midi_duration
from composer.contract import ComposerUnavailable, CompositionRejected
from composer.models.registry import set_current
from composer.serving.local import LocalComposerClient
from composer.serving.service import create_app
from tests.conftest import tiny_model

# A tiny untrained model takes about 8 events per second of music, a few thousand events a second on a CPU.
LONG = 600.0  # about a second of sampling: long enough for requests to overlap


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(models_dir: Path, **options) -> Iterator[str]:
    """The real app under uvicorn in a thread; yields its base URL once /healthz says ready."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(models_dir=models_dir, **options), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(15)


def make_models(root: Path, genre: str = "folk") -> Path:
    tiny_model(root / genre / "v1", genre=genre)
    set_current(genre, "v1", root)
    return root


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Small batches gain nothing from more threads, and spinning ones slow a busy machine down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def url(models: Path) -> Iterator[str]:
    with running(models) as base:
        yield base


def compose(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/compositions", json={"genre": "folk", **body}, timeout=60)


def metric_samples(url: str) -> dict[str, list]:
    text = httpx.get(f"{url}/metrics").text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_genres_lists_models_versions_and_cards(url: str):
    genres = {g["name"]: g for g in httpx.get(f"{url}/v1/genres").json()}
    folk = genres["folk"]
    assert folk["current_version"] == "v1" and folk["versions"] == ["v1"] and folk["loaded"]
    assert folk["card"]["config"]["hidden_size"] == 32 and folk["license"]
    assert all(g["current_version"] is None for name, g in genres.items() if name != "folk")
    assert folk["aliases"] == [] and "bach" in genres["chorale"]["aliases"]  # words from the manifests


def test_composes_a_piece_of_the_asked_genre_and_length(url: str):
    response = compose(url, seconds=20, seed=3, return_tokens=True)
    assert response.status_code == 200, response.text
    piece = response.json()
    assert piece["genre"] == "folk" and piece["model_version"] == "v1" and piece["seed"] == 3
    assert 20 <= piece["seconds"] <= 20 * 1.15 + 1
    assert len(piece["tokens"]) == piece["events"] > 0
    notes = load_notes(base64.b64decode(piece["midi"]))
    assert notes and abs(midi_duration(notes) - 20) <= 20 * 0.15 + 1
    assert len(events.decode(piece["tokens"])) == len(notes)
    no_seed = compose(url, seconds=2).json()
    assert isinstance(no_seed["seed"], int) and no_seed["id"] != piece["id"]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"genre": "jazz"}, 404, "unknown genre 'jazz'"),
        ({"genre": "pop"}, 404, "no trained model"),
        ({"genre": "../../etc"}, 422, "genre"),
        ({"seconds": 0}, 422, "seconds"),
        ({"seconds": 601}, 422, "seconds"),
        ({"temperature": -1}, 422, "temperature"),
        ({"primer": base64.b64encode(b"not a midi file").decode()}, 422, "primer: not a readable MIDI file"),
        ({"primer": "%%%"}, 422, "primer is not valid base64"),
        ({"primer": [60, 300, 999]}, 422, "primer tokens must be performance events"),
        ({"audio_format": "flac"}, 422, "audio_format"),
    ],
)
def test_bad_requests_get_a_clear_4xx(url: str, body: dict, status: int, says: str):
    response = compose(url, **body)
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]


def test_a_primer_is_continued(url: str):
    primer = midi_bytes([events.Note(60, 80, 0.0, 0.5), events.Note(64, 90, 0.5, 1.0)])
    as_midi = compose(url, seconds=5, seed=9, primer=base64.b64encode(primer).decode()).json()
    as_tokens = compose(url, seconds=5, seed=9, primer=events.encode(load_notes(primer)).tolist()).json()
    plain = compose(url, seconds=5, seed=9).json()
    assert as_midi["midi"] == as_tokens["midi"] != plain["midi"]


def test_audio_is_rendered_or_clearly_unavailable(url: str):
    response = compose(url, seconds=3, seed=1, audio_format="wav")
    if response.status_code == 501:  # composer.audio.render or its tools are not installed here
        assert "audio rendering is not available" in response.json()["detail"]
        return
    assert response.status_code == 200, response.text
    piece = response.json()
    assert piece["audio_mime"] == "audio/wav" and base64.b64decode(piece["audio"])[:4] == b"RIFF"


def test_concurrent_requests_are_batched_and_a_seed_replays_alone(url: str):
    seeds = list(range(100, 108))
    with ThreadPoolExecutor(len(seeds)) as pool:
        responses = list(pool.map(lambda s: compose(url, seconds=LONG / 2, seed=s), seeds))
    assert [r.status_code for r in responses] == [200] * len(seeds)
    pieces = [r.json() for r in responses]
    assert len({p["midi"] for p in pieces}) == len(seeds)
    for piece in pieces:
        assert load_notes(base64.b64decode(piece["midi"]))
        assert LONG / 2 <= piece["seconds"] <= LONG / 2 * 1.15 + 1

    sizes = metric_samples(url)["composer_batch_size"]
    count = next(s.value for s in sizes if s.name.endswith("_count"))
    alone = next(s.value for s in sizes if s.name.endswith("_bucket") and s.labels["le"] == "1.0")
    assert count > alone, "no step sampled more than one stream"

    replay = compose(url, seconds=LONG / 2, seed=104).json()
    assert replay["midi"] == pieces[4]["midi"]


def test_healthz_and_metrics(url: str):
    health = httpx.get(f"{url}/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["ready"] and body["queue_depth"] == 0 and body["genres"]["folk"]["version"] == "v1"
    assert httpx.get(f"{url}/metrics").headers["content-type"].startswith("text/plain")
    samples = metric_samples(url)
    for name in ("composer_requests", "composer_request_seconds", "composer_batch_size", "composer_events"):
        assert name in samples, name
    assert any(s.labels.get("genre") == "folk" for s in samples["composer_queue_depth"])
    ok = [s for s in samples["composer_requests"] if s.labels == {"route": "/v1/compositions", "status": "200"}]
    assert ok and ok[0].value >= 1


def test_openapi_documents_the_fields(url: str):
    schema = httpx.get(f"{url}/openapi.json").json()
    fields = schema["components"]["schemas"]["CompositionIn"]["properties"]
    assert "description" in fields["seconds"] and "description" in fields["primer"]


def test_a_full_queue_answers_503_with_retry_after(tmp_path: Path):
    with running(make_models(tmp_path), max_batch=1, queue_limit=1) as base, ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda s: compose(base, seconds=LONG, seed=s, candidates=1), range(6)))
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}, codes
    busy = next(r for r in responses if r.status_code == 503)
    assert int(busy.headers["retry-after"]) >= 1 and "try again" in busy.json()["detail"]


def test_a_piece_whose_candidates_do_not_all_fit_takes_no_place(tmp_path: Path):
    with running(make_models(tmp_path), max_batch=1, queue_limit=2) as base:
        assert compose(base, seconds=2, candidates=4).status_code == 503
        assert httpx.get(f"{base}/healthz").json()["queue_depth"] == 0
        chosen = compose(base, seconds=2, seed=3, candidates=2)
        assert chosen.status_code == 200 and chosen.json()["seed"] == 3
        assert compose(base, seconds=2, seed=3, candidates=2).json()["midi"] == chosen.json()["midi"]


def test_timeouts_and_promoted_models(tmp_path: Path):
    root = make_models(tmp_path)
    with running(root, request_timeout_s=0.2, reload_check_s=0.1) as base:
        slow = compose(base, seconds=LONG)
        assert slow.status_code == 504 and "not finished within" in slow.json()["detail"]
        assert compose(base, seconds=2).json()["model_version"] == "v1"
        tiny_model(root / "folk" / "v2", seed=1)
        set_current("folk", "v2", root)
        deadline = time.monotonic() + 10
        while compose(base, seconds=2).json()["model_version"] != "v2":
            assert time.monotonic() < deadline, "the promoted model was not picked up"
            time.sleep(0.1)
        assert httpx.get(f"{base}/healthz").json()["genres"]["folk"]["active"] == 0


class FlakyHandler(BaseHTTPRequestHandler):
    """Fails the first ``failures`` requests with 503, then answers ``reply``; counts calls."""

    failures = 1
    reply: tuple[int, dict] = (200, {})
    calls = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        type(self).calls += 1
        status, body = (503, {"detail": "busy"}) if type(self).calls <= self.failures else self.reply
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


@contextmanager
def stub(failures: int, reply: tuple[int, dict]) -> Iterator[tuple[str, type[FlakyHandler]]]:
    handler = type("Stub", (FlakyHandler,), {"failures": failures, "reply": reply, "calls": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_http_client_retries_5xx_and_connection_errors_not_4xx(url: str):
    real = compose(url, seconds=3, seed=5).json()
    with stub(1, (200, real)) as (base, handler), HttpComposerClient(base, retries=2, backoff_s=0.01) as client:
        piece = client.compose("folk", 3, seed=5)
    assert handler.calls == 2 and piece.midi == base64.b64decode(real["midi"]) and piece.model_version == "v1"

    with (
        stub(0, (422, {"detail": "seconds: too long"})) as (base, handler),
        HttpComposerClient(base) as client,
        pytest.raises(CompositionRejected, match="seconds: too long") as rejected,
    ):
        client.compose("folk", 3)
    assert handler.calls == 1 and rejected.value.status == 422

    closed = HttpComposerClient(f"http://127.0.0.1:{free_port()}", retries=1, backoff_s=0.01)
    with closed, pytest.raises(ComposerUnavailable, match="ConnectError"):
        closed.compose("folk", 3)


def test_http_and_local_clients_agree(url: str, models: Path):
    local = LocalComposerClient(models_dir=models)
    with HttpComposerClient(url) as remote:
        assert [g.current_version for g in remote.genres()] == [g.current_version for g in local.genres()]
        assert [g.aliases for g in remote.genres()] == [g.aliases for g in local.genres()]
        primer = midi_bytes([events.Note(67, 70, 0.0, 0.4)])
        over_http = remote.compose("folk", 8, temperature=0.9, seed=77, primer_midi=primer)
        with pytest.raises(CompositionRejected, match="unknown genre") as remote_error:
            remote.compose("jazz")
    in_process = local.compose("folk", 8, temperature=0.9, seed=77, primer_midi=primer)
    assert in_process.midi == over_http.midi and in_process.events == over_http.events
    assert (in_process.seed, in_process.model_version) == (77, "v1")
    with pytest.raises(CompositionRejected, match="unknown genre") as local_error:
        local.compose("jazz")
    assert local_error.value.status == remote_error.value.status == 404
    with pytest.raises(CompositionRejected, match="seconds"):
        local.compose("folk", 0)


def test_client_from_env_picks_http_or_local():
    remote = composer_client_from_env({"COMPOSER_URL": "http://127.0.0.1:9"})
    assert isinstance(remote, HttpComposerClient)
    remote.close()
    assert isinstance(composer_client_from_env({}), LocalComposerClient)


def test_a_client_that_hangs_up_frees_its_place(tmp_path: Path):
    """Four long pieces, one at a time, whose clients give up at once: at most the first is finished."""
    with running(make_models(tmp_path), max_batch=1) as base:

        def impatient(seed: int) -> None:
            body = {"genre": "folk", "seconds": LONG, "seed": seed}
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{base}/v1/compositions", json=body, timeout=0.3)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(impatient, range(4)))
        deadline = time.monotonic() + 20
        while (health := httpx.get(f"{base}/healthz").json()["genres"]["folk"])["active"] or health["queue_depth"]:
            assert time.monotonic() < deadline, health
            time.sleep(0.05)
        samples = metric_samples(base)
        finished = sum(s.value for s in samples["composer_compositions"] if s.name.endswith("_total"))
        assert finished <= 1, finished
        closed = [s for s in samples["composer_requests"] if s.labels.get("status") == "499"]
        assert sum(s.value for s in closed) >= 3
