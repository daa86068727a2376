#!/usr/bin/env bash
# Every GPU check of issue #9 in two device calls (the real weights reach the machine in two parts):
#
#   bash ../shared/bench/gpu_weights.sh pack               # here, once
#   run carry [".gpu1"]: bash bench/gpu_session.sh engine  # stages part 1, then the engine benchmark (random weights)
#   run carry [".gpu2"]: bash bench/gpu_session.sh real    # at once after: build-library on the real weights, then
#                                                          # the engine's tests on the GPU
#
# Results land in $OUT (the device tool brings them back; elsewhere set OUT): gpu_bench.jsonl, build.log,
# tests.log. CONFIGS, SECS, BUILD_ARGS and TESTS override what runs.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/machine.txt"
python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)" \
  | tee -a "$OUT/machine.txt"
case "${1:?engine or real}" in
engine)
  bash .gpu1/stage.sh > /dev/null
  default="peft studio1 studio1_eager studio12 studio12_eager bare12 eval1 eval1_eager eval12 eval12_eager"
  default="$default parity profile1_eager profile1_compiled"
  # shellcheck disable=SC2086
  SECS=${SECS:-3} timeout 420 python3 bench/gpu_bench.py ${CONFIGS:-$default} 2>&1 \
    | grep --line-buffered -v "Warning\|warnings.warn" | tee "$OUT/gpu_bench.jsonl"
  ;;
real)
  # shellcheck disable=SC2086
  bash .gpu2/gpu_weights.sh run bash -c "
    python3 -c 'from studio.backbones import load_backbone; load_backbone()'   # assemble + convert, not timed
    start=\$(date +%s%N)
    timeout 300 python3 -m studio build-library --out /tmp/lib --workdir /tmp/build ${BUILD_ARGS:-} 2>&1 \
      | tr '\r' '\n' | grep -v '^\s*$' | tail -40
    echo \"build-library wall_ms \$(( (\$(date +%s%N) - start) / 1000000 ))\"
  " 2>&1 | tee "$OUT/build.log"
  STUDIO_COMPILE=0 bash .gpu2/gpu_weights.sh run timeout 200 python3 -m pytest -q -p no:cacheprovider \
    ${TESTS:-tests/test_tuning.py tests/test_evaluation.py tests/test_backbones.py} 2>&1 | tail -30 | tee "$OUT/tests.log"
  ;;
esac
