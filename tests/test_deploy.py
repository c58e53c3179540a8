"""The deployment files (deploy/) against the code they run: commands, settings, probes, pins.

Nothing here needs Docker, a cluster or the network: the compose, Kubernetes and systemd
files are read as data and checked against the real CLIs (typer apps), the real settings
(pydantic models), the real routes (the FastAPI apps, called in-process) and the real
metrics registry; deploy/validate.sh then runs whatever linters this machine has.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import typer.main

from composer.config import PROJECT_ROOT

# PyYAML is in the development environment but not (yet) a declared dev dependency.
yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the deployment files (pip install PyYAML)")

DEPLOY = PROJECT_ROOT / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
DOCKER = DEPLOY / "docker"
DOCKERFILES = [DOCKER / "Dockerfile.cpu", DOCKER / "Dockerfile.cuda"]
BAND_IMAGES = {"band-cpu", "band-cuda"}
TORCH_PIN = "2.13.0"

# Variables that belong to other programs, documented by them: the postgres image, the
# Python/pip/matplotlib runtime, the NVIDIA container toolkit, the shell.
STANDARD_NAMES = {
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "PGDATA",
    "HOME",
    "PATH",
    "HOSTNAME",
    "MPLCONFIGDIR",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "PIP_ROOT_USER_ACTION",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
}
SECRET_NAMES = {
    "MASTODON_ACCESS_TOKEN",
    "ARCHIVE_ADMIN_TOKEN",
    "POSTGRES_PASSWORD",
    "TWITTER_API_KEY",
    "TWITTER_API_SECRET",
    "TWITTER_ACCESS_TOKEN",
    "TWITTER_ACCESS_TOKEN_SECRET",
    "TWITTER_BEARER_TOKEN",
}
ASSIGNMENT = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


# --- reading the files -------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def k8s_objects(include_examples: bool = True) -> list[tuple[str, dict]]:
    names = list(kustomization()["resources"])
    if include_examples:
        names += ["secret.example.yaml", "dev-postgres.yaml"]
    return [(name, doc) for name in names for doc in load_all(K8S / name)]


def pod_specs() -> list[tuple[str, dict]]:
    specs = []
    for _, obj in k8s_objects():
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            specs.append((obj["metadata"]["name"], obj["spec"]["template"]["spec"]))
    return specs


def band_containers() -> list[tuple[str, dict]]:
    return [
        (name, c)
        for name, spec in pod_specs()
        for c in spec.get("containers", []) + spec.get("initContainers", [])
        if c["image"] in BAND_IMAGES
    ]


def env_file(path: Path, commented: bool = True) -> dict[str, str]:
    """NAME=value lines; with ``commented``, also the commented-out ``# NAME=value`` examples."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("#") and not commented:
            continue
        if m := ASSIGNMENT.match(line):
            found[m[1]] = m[2]
    return found


def unit_files() -> list[Path]:
    return sorted([*SYSTEMD.glob("*.service"), *SYSTEMD.glob("*.target")])


def unit_values(path: Path, key: str) -> list[str]:
    return [line.split("=", 1)[1].strip() for line in path.read_text().splitlines() if line.startswith(f"{key}=")]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip().removesuffix("\\") + " "
        if not raw.rstrip().endswith("\\"):
            if current.strip():
                word, _, rest = current.strip().partition(" ")
                lines.append((word.upper(), rest.strip()))
            current = ""
    return lines


# --- the code's side ---------------------------------------------------------------------------


def cli_apps() -> dict[str, typer.Typer]:
    from bot.cli import app as bot_app
    from composer.cli import app as composer_app

    return {"composer": composer_app, "bot": bot_app}


class CliMismatch(ValueError):
    """A deployment file runs a command or option our CLIs do not have."""


def parse_cli(argv: list[str]) -> tuple[str, dict]:
    """Resolve ``composer ...``/``bot ...`` to its real command and parse the arguments as
    the CLI would (unknown commands or options, bad values raise CliMismatch); returns
    ("bot db upgrade", params). Typer may bring its own copy of click, so no click types here."""
    program = Path(argv[0]).name
    apps = cli_apps()
    if program not in apps:
        raise CliMismatch(f"{argv[0]!r} is neither the composer nor the bot command")
    command = typer.main.get_command(apps[program])
    path, rest = [program], list(argv[1:])
    while hasattr(command, "commands"):  # a group: descend by name
        if not rest or rest[0] not in command.commands:
            raise CliMismatch(f"{' '.join(path)} has no command {rest[0] if rest else '(none)'!r}")
        path.append(rest[0])
        command = command.commands[rest.pop(0)]
    try:
        context = command.make_context(" ".join(path), rest)
    except Exception as exc:  # click's UsageError / BadParameter, from whichever click typer uses
        if not hasattr(exc, "format_message"):
            raise
        raise CliMismatch(f"{' '.join(path)}: {exc.format_message()}") from None
    return " ".join(path), context.params


def band_command(argv: list[str]) -> list[str] | None:
    """The band command a container or unit runs, looking through ``sh -c '... exec CMD'``."""
    if argv and Path(argv[0]).name in ("sh", "bash") and argv[1:2] == ["-c"]:
        words = shlex.split(argv[2])
        return words[words.index("exec") + 1 :] if "exec" in words else None
    return argv if argv and Path(argv[0]).name in ("composer", "bot") else None


def setting_names() -> set[str]:
    """Every environment variable the project reads: both settings models, plus the names
    the code looks up directly (os.environ.get / env.get), e.g. COMPOSER_URL, BOT_LOG_LEVEL."""
    from bot.config import ENV_FILE_VARIABLE, BotSettings
    from composer.config import ComposerSettings

    prefix = ComposerSettings.model_config["env_prefix"]
    names = {field.upper() for field in BotSettings.model_fields}
    names |= {prefix + field.upper() for field in ComposerSettings.model_fields}
    names.add(ENV_FILE_VARIABLE)
    for source in [*(PROJECT_ROOT / "composer").rglob("*.py"), *(PROJECT_ROOT / "bot").rglob("*.py")]:
        names |= set(re.findall(r"""(?:environ|env)\.get\(\s*["']([A-Z][A-Z0-9_]*)["']""", source.read_text()))
    return names


def deploy_own_names() -> set[str]:
    """BAND_* names the deployment itself defines: compose interpolations, the health check's."""
    text = (DEPLOY / "compose.yaml").read_text() + (DEPLOY / "compose.gpu.yaml").read_text()
    names = {n for n in re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", text) if n.startswith("BAND_")}
    names |= set(re.findall(r"""environ\.get\(\s*["'](BAND_[A-Z0-9_]*)["']""", (DOCKER / "healthcheck.py").read_text()))
    return names


def used_names() -> dict[str, set[str]]:
    """Every environment variable name the deployment files set or interpolate, by file."""
    used: dict[str, set[str]] = {}

    def add(where: str, names) -> None:
        used.setdefault(where, set()).update(names)

    for path in (DEPLOY / ".env.example", DEPLOY / "settings.env.example", SYSTEMD / "band.env.example"):
        add(path.name, env_file(path))
    for name in ("compose.yaml", "compose.gpu.yaml"):
        text = (DEPLOY / name).read_text()
        add(name, re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
        for service in yaml.safe_load(text)["services"].values():
            environment = service.get("environment") or {}
            add(name, environment if isinstance(environment, dict) else [e.split("=")[0] for e in environment])
    for name, obj in k8s_objects():
        if obj["kind"] in ("ConfigMap", "Secret"):
            add(name, (obj.get("data") or {}) | (obj.get("stringData") or {}))
    add(
        "secret.example.yaml",
        re.findall(r"^\s*#\s*([A-Z][A-Z0-9_]*):", (K8S / "secret.example.yaml").read_text(), re.M),
    )
    for name, spec in pod_specs():
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            add(name, [e["name"] for e in c.get("env", [])])
    for unit in unit_files():
        add(unit.name, [v.split("=", 1)[0] for v in unit_values(unit, "Environment")])
    for dockerfile in DOCKERFILES:
        for word, args in dockerfile_instructions(dockerfile):
            if word == "ENV":
                add(dockerfile.name, re.findall(r"([A-Z][A-Z0-9_]*)=", args))
    return used


# --- YAML -----------------------------------------------------------------------------------------


def test_every_yaml_file_parses():
    files = yaml_files()
    assert len(files) >= 10, files
    for path in files:
        assert load_all(path), f"{path}: no YAML document"


# --- commands ------------------------------------------------------------------------------------


def every_command() -> list[tuple[str, list[str]]]:
    """(where, argv) of every band command the deployment runs."""
    found = []
    for name, service in compose()["services"].items():
        if "command" in service:
            found.append((f"compose {name}", band_command(service["command"])))
    for name, c in band_containers():
        if c["name"] != "seed-models":
            found.append((f"k8s {name}/{c['name']}", band_command(c["command"] + c.get("args", []))))
    for unit in SYSTEMD.glob("*.service"):
        for line in unit_values(unit, "ExecStart"):
            found.append((unit.name, shlex.split(line)))
    for dockerfile in DOCKERFILES:
        cmd = [json.loads(args) for word, args in dockerfile_instructions(dockerfile) if word == "CMD"]
        found.append((dockerfile.name, cmd[-1]))
    return found


def test_every_command_exists_in_our_clis():
    commands = every_command()
    assert len(commands) >= 12
    seen = set()
    for where, argv in commands:
        assert argv, f"{where}: runs no composer/bot command"
        try:
            name, _ = parse_cli(argv)
        except CliMismatch as exc:
            pytest.fail(f"{where}: {shlex.join(argv)}: {exc}")
        seen.add(name)
    assert {"composer serve", "bot run", "bot web", "bot db upgrade"} <= seen


def test_the_checker_rejects_what_the_clis_do_not_have():
    assert parse_cli(["/opt/band/venv/bin/composer", "serve", "--port", "8000"])[1]["port"] == 8000
    for argv in (
        ["composer", "serv"],
        ["composer", "serve", "--hots", "x"],
        ["bot", "db"],
        ["bot", "web", "--port", "x"],
    ):
        with pytest.raises(CliMismatch):
            parse_cli(argv)


def test_ports_and_urls_agree():
    services = compose()["services"]
    composer_port = parse_cli(services["composer"]["command"])[1]["port"]
    web_port = parse_cli(services["web"]["command"])[1]["port"]
    assert any(str(p).endswith(f":{composer_port}") for p in services["composer"]["ports"])
    assert any(str(p).endswith(f":{web_port}") for p in services["web"]["ports"])
    for name in ("bot", "web"):
        assert services[name]["environment"]["COMPOSER_URL"] == f"http://composer:{composer_port}"

    objects = {(o["kind"], o["metadata"]["name"]): o for _, o in k8s_objects()}
    for name, spec in pod_specs():
        for c in spec["containers"]:
            if c["image"] in BAND_IMAGES and c.get("ports"):
                params = parse_cli(band_command(c["command"]))[1]
                port = params.get("port") or params["metrics_port"]
                assert [p["containerPort"] for p in c["ports"]] == [port], name
                if ("Service", name) not in objects:  # a worker's metrics port is scraped, not a Service
                    continue
                service = objects[("Service", name)]
                assert {p["targetPort"] for p in service["spec"]["ports"]} <= {p["name"] for p in c["ports"]} | {port}
    composer_service = objects[("Service", "band-composer")]
    config = objects[("ConfigMap", "band-config")]["data"]
    assert config["COMPOSER_URL"] == f"http://band-composer:{composer_service['spec']['ports'][0]['port']}"

    served = parse_cli(shlex.split(unit_values(SYSTEMD / "band-composer.service", "ExecStart")[0]))[1]
    assert env_file(SYSTEMD / "band.env.example")["COMPOSER_URL"] == f"http://{served['host']}:{served['port']}"


# --- settings ---------------------------------------------------------------------------------------


def test_every_variable_is_a_real_setting():
    known = setting_names() | STANDARD_NAMES | deploy_own_names()
    assert {"COMPOSER_URL", "COMPOSER_MODELS_DIR", "DATABASE_URL", "BOT_WORKER_ID", "BOT_LOG_LEVEL"} <= known
    unknown = {where: sorted(names - known) for where, names in used_names().items() if names - known}
    assert not unknown, f"not a setting of composer/config.py or bot/config.py, nor documented: {unknown}"


def test_the_checker_flags_a_misspelt_setting():
    assert "BOT_INTERVAL_SECOND" not in setting_names()
    assert "COMPOSER_MODEL_DIR" not in setting_names()


@pytest.fixture
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(("BOT_", "MASTODON_", "TWITTER_", "DATABASE_URL", "MEDIA_DIR", "COMPOSER_", "ARCHIVE_")):
            monkeypatch.delenv(name, raising=False)


def test_example_settings_load(clean_env, tmp_path):
    """The examples' values pass the bots' and the composer's own validation."""
    from bot.config import BotSettings, load_settings
    from composer.config import ComposerSettings

    both = tmp_path / "compose.env"  # what a compose worker sees: the settings, and its secrets from .env
    both.write_text((DEPLOY / "settings.env.example").read_text() + (DEPLOY / ".env.example").read_text())
    for path in (both, SYSTEMD / "band.env.example"):
        settings = load_settings(env_file=path)  # the platform's credentials included
        assert settings.bot_platform == "mastodon" and settings.archive_base_url.startswith("https://")
    systemd = load_settings(env_file=SYSTEMD / "band.env.example")
    assert systemd.resolved_database_url.startswith("postgresql+psycopg://")
    assert systemd.resolved_media_dir == Path("/var/lib/band/media")
    composer = ComposerSettings(_env_file=SYSTEMD / "band.env.example")
    assert composer.models_dir == Path("/var/lib/band/models") and composer.genres_dir == Path("/opt/band/genres")

    objects = {
        o["kind"]: o for _, o in k8s_objects() if o["metadata"]["name"] == "band-secrets" or o["kind"] == "ConfigMap"
    }
    secrets = objects["Secret"]["stringData"]
    worker_env = objects["ConfigMap"]["data"] | {k: secrets[k] for k in pod_secrets("band-bot") if k in secrets}
    k8s = BotSettings(**{name.lower(): value for name, value in worker_env.items()})
    assert k8s.missing_for_platform() == [] and k8s.resolved_database_url.startswith("postgresql+psycopg://")
    with pytest.raises(ValueError, match="placeholder"):  # the web refuses the example's takedown token
        BotSettings(archive_admin_token=secrets["ARCHIVE_ADMIN_TOKEN"])


def test_secrets_are_placeholders():
    values: list[tuple[str, str, str]] = []
    for path in (DEPLOY / ".env.example", DEPLOY / "settings.env.example", SYSTEMD / "band.env.example"):
        values += [(path.name, k, v) for k, v in env_file(path).items()]
    for name, obj in k8s_objects():
        if obj["kind"] == "Secret":
            values += [(name, k, v) for k, v in obj["stringData"].items()]
    checked = 0
    for where, name, value in values:
        if name in SECRET_NAMES or (name == "DATABASE_URL" and where.endswith(".yaml")):
            checked += 1
            placeholder = value == "" or "CHANGE_ME" in value or value.startswith("dev-only")
            assert placeholder, f"{where}: {name} must be a placeholder (empty, CHANGE_ME... or dev-only), not a value"
    assert checked >= 6
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert ".env" in ignored and "settings.env" in ignored and "k8s/secret.yaml" in ignored


# What each service needs of the secrets (DATABASE_URL holds the database's password); nothing more.
NEEDED_SECRETS = {
    "migrate": {"DATABASE_URL"},
    "bot": {"DATABASE_URL", "MASTODON_ACCESS_TOKEN", *(n for n in SECRET_NAMES if n.startswith("TWITTER_"))},
    "web": {"DATABASE_URL", "ARCHIVE_ADMIN_TOKEN"},
    "composer": set(),
}
SECRETS_AND_DATABASE = SECRET_NAMES | {"DATABASE_URL"}


def pod_secrets(name: str) -> set[str]:
    """The keys of band-secrets the pods of ``name`` get; every key when one takes the Secret whole."""
    (spec,) = [s for pod, s in pod_specs() if pod == name]
    keys: set[str] = set()
    for c in spec["containers"] + spec.get("initContainers", []):
        for source in c.get("envFrom", []):
            if source.get("secretRef", {}).get("name") == "band-secrets":
                keys |= SECRETS_AND_DATABASE
        for e in c.get("env", []):
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref and ref["name"] == "band-secrets":
                assert ref["key"] == e["name"], e
                keys.add(ref["key"])
    return keys


def test_each_service_gets_only_the_secrets_it_needs():
    """A service that is compromised, or that logs its environment, holds no one else's secrets."""
    assert not SECRETS_AND_DATABASE & set(env_file(DEPLOY / "settings.env.example"))  # every container gets it
    services = compose()["services"]
    for name, needed in NEEDED_SECRETS.items():
        service = services[name]
        assert [f["path"] for f in service["env_file"]] == ["${BAND_SETTINGS_FILE:-settings.env}"], name
        assert set(service.get("environment") or {}) & SECRETS_AND_DATABASE == needed, name
        for secret in needed - {"DATABASE_URL"}:
            assert service["environment"][secret] == f"${{{secret}:-}}", (name, secret)
    assert set(services["postgres"]["environment"]) & SECRETS_AND_DATABASE == {"POSTGRES_PASSWORD"}
    for name, needed in NEEDED_SECRETS.items():
        assert pod_secrets(f"band-{name}") == needed, name


def test_workers_get_unique_stable_ids():
    """Several workers must never share BOT_WORKER_ID (they would free each other's leases)."""
    assert "BOT_WORKER_ID" not in env_file(DEPLOY / ".env.example", commented=False)
    assert "BOT_WORKER_ID" not in env_file(DEPLOY / "settings.env.example", commented=False)
    assert "BOT_WORKER_ID" not in env_file(SYSTEMD / "band.env.example", commented=False)
    bot = compose()["services"]["bot"]
    assert "BOT_WORKER_ID" in bot["command"][-1] and "HOSTNAME" in bot["command"][-1]
    (container,) = [c for name, c in band_containers() if name == "band-bot"]
    (worker_id,) = [e for e in container["env"] if e["name"] == "BOT_WORKER_ID"]
    assert worker_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert any("%i" in v for v in unit_values(SYSTEMD / "band-bot@.service", "Environment"))


def test_workers_scale_only_on_postgresql():
    """The replicas rely on FOR UPDATE SKIP LOCKED in bot/db.py; the databases they get are PostgreSQL."""
    assert "with_for_update(skip_locked=True)" in (PROJECT_ROOT / "bot" / "db.py").read_text()
    services = compose()["services"]
    assert services["bot"]["deploy"]["replicas"] >= 2
    assert services["bot"]["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("bot", "web"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    (bot,) = [o for _, o in k8s_objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == "band-bot"]
    assert bot["spec"]["replicas"] >= 2


# --- Kubernetes ---------------------------------------------------------------------------------------


def test_k8s_objects_are_complete_and_listed():
    listed = set(kustomization()["resources"])
    not_listed = {"kustomization.yaml", "secret.example.yaml", "dev-postgres.yaml"}  # see kustomization.yaml
    on_disk = {p.name for p in K8S.glob("*.yaml")}
    assert listed | not_listed == on_disk, "every manifest is either in kustomization.yaml or deliberately left out"
    kinds = set()
    for name, obj in k8s_objects():
        assert obj.get("apiVersion") and obj.get("kind") and obj.get("metadata", {}).get("name"), name
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "band", f"{name}: {obj['kind']} {obj['metadata']['name']}"
        kinds.add(obj["kind"])
    assert {"Namespace", "ConfigMap", "Secret", "Job", "Deployment", "Service", "HorizontalPodAutoscaler"} <= kinds
    assert {"Ingress", "PersistentVolumeClaim"} <= kinds
    images = {i["name"] for i in kustomization()["images"]}
    assert {c["image"] for _, c in band_containers()} <= images
    for _, spec in pod_specs():
        for c in spec["containers"]:
            for source in c.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                assert ref["name"] in ("band-config", "band-secrets", "band-dev-postgres")


def test_k8s_storage_and_gpu():
    claims = {o["metadata"]["name"]: o for _, o in k8s_objects() if o["kind"] == "PersistentVolumeClaim"}
    assert claims["band-media"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claims["band-models"]["spec"]["accessModes"] == ["ReadWriteMany"]
    mounts = {}
    for name, spec in pod_specs():
        claims_by_volume = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in spec.get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        for c in spec["containers"]:
            for m in c.get("volumeMounts", []):
                if m["name"] in claims_by_volume:
                    mounts.setdefault(claims_by_volume[m["name"]], set()).add(name)
    assert mounts["band-media"] == {"band-bot", "band-web"}
    assert mounts["band-models"] == {"band-composer"}
    ((_, composer),) = [(n, s) for n, s in pod_specs() if n == "band-composer"]
    assert composer["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert composer["nodeSelector"] and composer["tolerations"]


def test_autoscaler_uses_the_exported_queue_gauge():
    from composer.serving.metrics import ServiceMetrics

    gauges = {m.name for m in ServiceMetrics().registry.collect() if m.type == "gauge"}
    (hpa,) = [o for _, o in k8s_objects() if o["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "band-composer"
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"] if metric["type"] == "Pods" else metric["external"]["metric"]["name"]
    assert name in gauges, f"{name} is not a gauge of composer/service_metrics.py ({sorted(gauges)})"
    adapter = (K8S / "extras" / "prometheus-adapter-values.yaml").read_text()
    assert f"seriesQuery: '{name}{{" in adapter and f"as: {name}" in adapter


# --- probes against the real apps -------------------------------------------------------------------


ROLES = {"composer serve": "composer", "bot run": "worker"}  # the rest (bot web): the archive web


def probe_paths() -> dict[str, set[str]]:
    """Every HTTP path the deployment probes, by app (composer, web or worker)."""
    paths: dict[str, set[str]] = {"composer": set(), "web": set(), "worker": set()}
    for _, c in band_containers():
        argv = band_command(c["command"])
        if argv is None:
            continue
        app = ROLES.get(parse_cli(argv)[0], "web")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in c:
                paths[app].add(c[probe]["httpGet"]["path"])
    for _, obj in k8s_objects():
        template = obj.get("spec", {}).get("template", {})
        annotations = template.get("metadata", {}).get("annotations", {})
        if "prometheus.io/path" in annotations:
            (command,) = {parse_cli(band_command(c["command"]))[0] for c in template["spec"]["containers"]}
            paths[ROLES.get(command, "web")].add(annotations["prometheus.io/path"])
    for name, service in compose()["services"].items():
        if url := (service.get("environment") or {}).get("BAND_HEALTHCHECK_URL"):
            paths[{"composer": "composer", "bot": "worker"}.get(name, "web")].add("/" + url.split("/", 3)[3])
    default = re.search(r'DEFAULT_URL = "http://[^/]+(/[^"]*)"', (DOCKER / "healthcheck.py").read_text())
    paths["composer"].add(default[1])
    return paths


def test_web_probes_answer(tmp_path, clean_env):
    from fastapi.testclient import TestClient

    from bot.config import load_settings
    from bot.migrate import upgrade
    from bot.web import create_app

    paths = probe_paths()["web"]
    assert paths, "the web has probes"
    settings = load_settings(
        require_platform=False, database_url=f"sqlite:///{tmp_path / 'bot.sqlite3'}", media_dir=tmp_path / "media"
    )
    upgrade(settings.resolved_database_url, "head")
    with TestClient(create_app(settings, genre_catalog=list)) as client:
        for path in sorted(paths):
            assert client.get(path).status_code == 200, f"bot web: GET {path}"
        assert client.get("/no-such-page").status_code == 404  # the check can fail


def test_worker_probes_answer():
    import httpx

    from bot.worker.health import WorkerHealth, serve

    paths = probe_paths()["worker"]
    assert {"/healthz", "/metrics"} <= paths
    server = serve(WorkerHealth(stale_after=60), "127.0.0.1", 0)
    try:
        for path in sorted(paths):
            answer = httpx.get(f"http://127.0.0.1:{server.server_address[1]}{path}")
            assert answer.status_code == 200, f"bot run: GET {path}"
    finally:
        server.shutdown()


def test_composer_probes_answer(tmp_path, clean_env):
    from fastapi.testclient import TestClient

    from composer.nn.model import ModelConfig, PerformanceRNN, save_model
    from composer.serving.service import create_app

    paths = probe_paths()["composer"]
    assert {"/healthz", "/metrics"} <= paths
    models = tmp_path / "models"
    model = PerformanceRNN(ModelConfig(embed_dim=8, hidden_size=8, num_layers=1))
    save_model(model, models / "folk" / "v1", {"genre": "folk", "validation_nll": 9.9, "version": "v1"}, half=False)
    (models / "folk" / "CURRENT").write_text("v1\n")
    with TestClient(create_app(models_dir=models, device="cpu", max_batch=2)) as client:
        deadline = time.monotonic() + 30
        while client.get("/healthz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        for path in sorted(paths):
            assert client.get(path).status_code == 200, f"composer serve: GET {path}"
        assert 'composer_queue_depth{genre="folk"}' in client.get("/metrics").text


# --- Dockerfiles -------------------------------------------------------------------------------------


def test_dockerfiles_pin_torch_and_run_as_a_user():
    setup = (PROJECT_ROOT / "scripts" / "setup.sh").read_text()
    assert re.search(r"TORCH_VERSION=\$\{TORCH_VERSION:-([0-9.]+)\}", setup)[1] == TORCH_PIN
    for kind in ("cpu", "cuda"):
        path = DOCKER / f"Dockerfile.{kind}"
        steps = dockerfile_instructions(path)
        text = " ".join(f"{w} {a}" for w, a in steps)
        assert f"ARG TORCH_VERSION={TORCH_PIN}" in text and '"torch==${TORCH_VERSION}"' in text, path
        assert "pip install -c /tmp/constraints.txt ." in text, f"{path}: the project must not move the torch pin"
        for package in ("fluidsynth", "fluid-soundfont-gm", "ffmpeg"):
            assert re.search(rf"apt-get install [^&]*\b{package}\b", text), f"{path}: {package}"
        users = [a for w, a in steps if w == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), f"{path}: runs as root"
        assert any(w == "HEALTHCHECK" for w, _ in steps), path
        ignore = [line for line in (DOCKER / f"Dockerfile.{kind}.dockerignore").read_text().splitlines()]
        allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
        for word, args in steps:
            if word == "COPY" and "--from=" not in args:
                sources = [a for a in args.split() if not a.startswith("--")][:-1]
                for source in sources:
                    assert (PROJECT_ROOT / source).exists(), f"{path}: COPY {source}: no such path"
                    assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed), (
                        f"{path}: COPY {source} is excluded by its .dockerignore"
                    )
    cpu = " ".join(f"{w} {a}" for w, a in dockerfile_instructions(DOCKER / "Dockerfile.cpu"))
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in cpu
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in cpu
    assert '--index-url "${TORCH_INDEX_URL}"' in cpu
    cuda = " ".join(f"{w} {a}" for w, a in dockerfile_instructions(DOCKER / "Dockerfile.cuda"))
    assert "nvidia/cuda:" in cuda and "download.pytorch.org/whl/${TORCH_CUDA}" in cuda


# --- the linters ---------------------------------------------------------------------------------------


def test_validate_script_passes():
    done = subprocess.run(["bash", str(DEPLOY / "validate.sh")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok    YAML parses" in done.stdout
