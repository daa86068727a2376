#!/usr/bin/env bash
# Simulate a Hugging Face Space's first start and first visitor on this machine:
#   a fresh virtual environment made from requirements.txt alone (torch swapped for this machine's CPU pin),
#   a fresh HOME (no studio cache, no model, no corpora), SPACE_ID set, `python launch.py` as the Space runs it,
#   then scripts/space_visit.py drives the default path through gradio_client.
# The hub is unreachable here, so this checks the Space's own fetching (PyPI) and the prebuilt-library path.
# Usage: bash scripts/simulate_space.sh [workdir]   (about 10 minutes on a 2-core machine; output in workdir/log)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/studio-space-XXXX)}
mkdir -p "$work/home"
echo "[space] fresh venv from requirements.txt in $work/venv"
python3 -m venv "$work/venv"
sed 's/^torch==.*/torch==2.13.0/' requirements.txt > "$work/requirements.txt"
"$work/venv/bin/pip" install --quiet -r "$work/requirements.txt"
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
echo "[space] python launch.py with SPACE_ID set, HOME=$work/home, port $port"
started=$(date +%s)
env -i PATH="$work/venv/bin:/usr/bin:/bin" HOME="$work/home" SPACE_ID=simulated/prompt-arithmetic-studio \
    PORT="$port" "$work/venv/bin/python" launch.py --host 127.0.0.1 > "$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
until grep -q "Prompt Arithmetic Studio on" "$work/server.log"; do
  kill -0 $server 2>/dev/null || { echo "[space] the server exited:"; tail -20 "$work/server.log"; exit 1; }
  sleep 2
done
echo "[space] page served $(( $(date +%s) - started )) s after start; the server said:"
grep "^\[studio\]" "$work/server.log" | sed 's/^/    /'
HOME="$work/home" PYTHONPATH="$PWD" "$work/venv/bin/python" scripts/space_visit.py "http://127.0.0.1:$port"
