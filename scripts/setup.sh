#!/usr/bin/env bash
# Installs everything aistack needs, idempotently, into .venv at the repository root:
#   - the aistack package and its pinned dependencies (.venv)
#   - aider-chat in its own environment (.venv/aider), because aider pins versions of
#     pydantic, fastapi, rich... that the stack's services should not be tied to
#   - the npm CLI agents (continue, opencode, qwen-code) into <cache dir>/npm, when Node.js >= 20 is there
#   - mini-swe-agent in its own environment (.venv/mini-swe-agent), for the same reason: litellm
#     and a large tree of pins (datasets, pandas, pyarrow, boto3...); the backend runs its program
#   - llama.cpp's llama-server (found on PATH or built once from source into the cache)
#   - the bundled default model (assembled once into the cache)
# With --test, also what the test suites need: system packages (Chromium, podman, PostgreSQL) when root.
# With --bench, also what `make bench` needs (wrk, the HTTP load generator).
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TESTS=0
WITH_BENCH=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TESTS=1 ;;
    --bench) WITH_BENCH=1 ;;
    *) echo "usage: $0 [--test] [--bench]" >&2; exit 2 ;;
  esac
done

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "aistack needs Python >= 3.11" >&2; exit 1; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  ((${#missing[@]})) || return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "please install these system packages: ${missing[*]}" >&2; return 1
  fi
  step "system packages: ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

if command -v dpkg >/dev/null; then
  apt_install git cmake g++ make bubblewrap  # bubblewrap: the agents' sandbox (aistack.sandbox)
  "$PY" -c 'import ensurepip' 2>/dev/null || apt_install python3-venv  # Debian splits `python3 -m venv` out
  if ((WITH_TESTS)); then apt_install chromium podman runc debootstrap procps systemd postgresql; fi  # procps: pgrep in the lifecycle tests; systemd: systemd-analyze verifies the units; postgresql: the store suites start a server
  # kubectl renders deploy/kubernetes in the tests; Debian's kubernetes-client (1.20) is too old for kustomize v5
  if ((WITH_TESTS)) && ! command -v kubectl >/dev/null; then echo "please install kubectl >= 1.27 (the Kubernetes tests render with it)" >&2; fi
  if ((WITH_BENCH)); then apt_install wrk; fi
fi

step "python environment (.venv)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]"

step "aider (.venv/aider)"
if [ ! -x .venv/aider/bin/aider ]; then
  "$PY" -m venv .venv/aider
  .venv/aider/bin/pip install -q --disable-pip-version-check "aider-chat==0.86.2"
fi

step "mini-swe-agent (.venv/mini-swe-agent)"
if [ ! -x .venv/mini-swe-agent/bin/mini ]; then
  "$PY" -m venv .venv/mini-swe-agent
  .venv/mini-swe-agent/bin/pip install -q --disable-pip-version-check "mini-swe-agent==2.4.6"
fi

step "CLI agents: continue, opencode, qwen-code (npm, into the stack's own prefix)"
if command -v npm >/dev/null && node -e 'process.exit(parseInt(process.versions.node) < 20 ? 1 : 0)' 2>/dev/null; then
  # the prefix (<cache dir>/npm) and the pinned packages, as the backends expect them
  read -r npm_prefix npm_packages < <(.venv/bin/python -c 'from aistack.config import load_settings
from aistack.ralph_wiggum.backends.agents import NPM_PACKAGES, npm_prefix
print(npm_prefix(load_settings()), *NPM_PACKAGES.values())')
  if [ "$(cat "$npm_prefix/.installed" 2>/dev/null)" != "$npm_packages" ]; then
    # shellcheck disable=SC2086  # one word per package
    npm install --prefix "$npm_prefix" --save-exact --no-fund --no-audit --no-update-notifier --loglevel=error $npm_packages
    echo "$npm_packages" > "$npm_prefix/.installed"
  fi
else
  echo "Node.js >= 20 with npm is not on PATH: the continue, opencode and qwen-code backends stay unavailable" >&2
fi

step "llama-server"
.venv/bin/aistack engine

step "bundled model"
.venv/bin/aistack model
