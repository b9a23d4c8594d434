#!/usr/bin/env bash
# Installs everything aistack needs, idempotently, into .venv at the repository root:
#   - the aistack package and its pinned dependencies (.venv)
#   - aider-chat in its own environment (.venv/aider), because aider pins versions of
#     pydantic, fastapi, rich... that the stack's services should not be tied to
#   - mini-swe-agent in its own environment (.venv/mini-swe-agent), for the same reason: litellm
#     and a large tree of pins (datasets, pandas, pyarrow, boto3...); the backend runs its program
#   - llama.cpp's llama-server (found on PATH or built once from source into the cache)
#   - the bundled default model (assembled once into the cache)
# With --test, also what the test suites need: system packages (Chromium, podman) when root.
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
  if ((WITH_TESTS)); then apt_install chromium podman runc debootstrap procps; fi  # procps: pgrep in the lifecycle tests
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

step "llama-server"
.venv/bin/aistack engine

step "bundled model"
.venv/bin/aistack model
