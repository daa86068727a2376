#!/bin/bash
# Seconds from `make studio` (a set-up machine) to the page answering: bash bench/startup.sh [port]
cd "$(dirname "$0")/.."
port=${1:-7861}
start=$(date +%s.%N)
PORT=$port make studio > /tmp/studio-startup-$port.log 2>&1 &
pid=$!
for i in $(seq 1 600); do
  if curl -sf -o /dev/null "http://127.0.0.1:$port/config"; then
    end=$(date +%s.%N); echo "page after $(echo "$end - $start" | bc) s"; break
  fi
  sleep 0.1
done
pkill -P $pid; kill $pid 2>/dev/null; wait $pid 2>/dev/null
