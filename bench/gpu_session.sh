#!/usr/bin/env bash
# Every GPU check of issue #9 in two device calls (the real weights reach the machine in two parts):
#
#   bash ../shared/bench/gpu_weights.sh pack               # here, once; and the wheels the GPU machine lacks
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -d .whl umap-learn==0.5.12 pynndescent==0.7.0      # (.whl/ listed in .git/info/exclude)
#   run carry [".gpu1"]: bash bench/gpu_session.sh engine  # stages part 1, then the engine benchmark (random weights)
#   run carry [".gpu2", ".whl"]: bash bench/gpu_session.sh real   # at once after: build-library on the real
#                                                          # weights, then the engine's tests on the GPU
#
# Results land in $OUT (the device tool brings them back; elsewhere set OUT): gpu_bench.jsonl, build.log,
# tests.log. CONFIGS, SECS, BUILD_ARGS and TESTS override what runs; COMPILED=1 adds the torch.compile rows, which
# compile for minutes (measured: 257 s for the first step on an H200).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/machine.txt"
python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)" \
  | tee -a "$OUT/machine.txt"
case "${1:?engine or real}" in
engine)
  bash .gpu1/stage.sh > /dev/null
  default="peft studio1 studio1_shared studio12 studio12_shared bare12 eval1 eval12 profile1_eager"
  [ "${COMPILED:-0}" = 1 ] && default="$default studio12_compiled eval12_compiled parity"
  # shellcheck disable=SC2086
  SECS=${SECS:-3} timeout 420 python3 bench/gpu_bench.py ${CONFIGS:-$default} 2>&1 \
    | grep --line-buffered -v "Warning\|warnings.warn" | tee "$OUT/gpu_bench.jsonl"
  ;;
real)
  if ls .whl/*.whl > /dev/null 2>&1; then  # umap-learn for the views build-library computes last
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
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
