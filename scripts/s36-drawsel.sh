#!/usr/bin/env bash
# The thirty-sixth session's draw-selection run (branch next/drawsel): the
# GPU tests (RUN: a pattern for fewer) (TestDrawTokensFiltered now wants every top-p and min-p draw
# made on the device, some by k_draw_sel), then synthetic Ring-mini FP8 and
# the whole Ring-flash FP8 at 1K with --sample, flat top-p and min-p drawn
# on the GPU and on the host, and a timeline of the top-p draw.
# Build first: CGO_ENABLED=0 go test -c -o bin/cuda.test ./backend/cuda/ && go build -o bin/ringo ./cmd/ringo
# run: bash scripts/s36-drawsel.sh (carry bin; timeout 600), ~8 minutes (NOHOST=1: no host draws)
set -u
TEST_BIN=bin/cuda.test BENCH=0 RUN="${RUN:-.}" TEST_TIMEOUT=400s OUT=$OUT/t scripts/gpu-check.sh > $OUT/t.txt 2>&1
export RINGO_CUDA_LIB_PATH=$(grep -o 'RINGO_CUDA_LIB_PATH=.*' $OUT/t.txt | head -1 | cut -d= -f2-)
grep -A1 "== Summary" $OUT/t.txt
grep -E -- "--- FAIL|--- SKIP|panic|draw_test.go:399" $OUT/t/test.log | head -20
grep -q -- "--- FAIL\|panic" $OUT/t/test.log && exit 1
for cfg in testdata/configs/Ring-mini-linear-2.0.json testdata/configs/Ring-flash-linear-2.0.inferred.json; do
  bin/ringo synth --config $cfg --dtype fp8 --out /dev/shm/rf > $OUT/synth.txt 2>&1
  echo "== $cfg"
  for v in "--sample" "--sample --top-p 0.95" "--sample --min-p 0.001" "--sample --top-p 0.95 --host-draw"; do
    [ -n "${NOHOST:-}" ] && [[ "$v" == *host-draw ]] && continue
    timeout 90 bin/ringo bench --device cuda --model /dev/shm/rf --prompt 512 --gen 64 --context 1k --batch 1 $v > $OUT/rfb.txt 2>&1
    echo "[$v]"; grep -E "decode @|rror|panic" $OUT/rfb.txt
  done
  RINGO_CUDA_TIMELINE=1 RINGO_CUDA_STATS=64 timeout 90 bin/ringo bench --device cuda --model /dev/shm/rf --prompt 512 --gen 128 --context 1k --batch 1 --sample --top-p 0.95 > $OUT/tl.txt 2>&1
  awk '/cuda timeline/{c++} c==2' $OUT/tl.txt | grep -E "^cuda timeline|k_draw" | head -12
  rm -rf /dev/shm/rf
done
