#!/usr/bin/env bash
# The thirty-seventh session's closing run on main: the whole GPU suite,
# then the whole Ring-flash FP8 and Ring-mini FP8 at 1K, batch 1, one
# `ringo bench` process per figure, --sample (drawn on the GPU) alternated
# with the steps alone, and one process each with RINGO_CUDA_STATS (no
# timeline) for the step's wall time against the GPU's busy time.
# Build first: CGO_ENABLED=0 go test -c -o bin/cuda.test ./backend/cuda/ && go build -o bin/ringo ./cmd/ringo
# run: bash scripts/s37-final.sh (carry bin; timeout 600), ~10 minutes, or in
# two calls: MODELS=mini (the suite and Ring-mini, ~4.5 minutes), then
# RUN=TestFP8MMAMoE MODELS=flash (~6).
set -u
MODELS="${MODELS:-flash mini}"
TEST_BIN=bin/cuda.test BENCH=0 RUN="${RUN:-.}" TEST_TIMEOUT=400s OUT=$OUT/t scripts/gpu-check.sh > $OUT/t.txt 2>&1
export RINGO_CUDA_LIB_PATH=$(grep -o 'RINGO_CUDA_LIB_PATH=.*' $OUT/t.txt | head -1 | cut -d= -f2-)
grep -A1 "== Summary" $OUT/t.txt
grep -E -- "--- FAIL|--- SKIP|panic" $OUT/t/test.log | head -20
grep -q -- "--- FAIL\|panic" $OUT/t/test.log && exit 1
for m in $MODELS; do
  cfg=testdata/configs/Ring-mini-linear-2.0.json
  [ $m = flash ] && cfg=testdata/configs/Ring-flash-linear-2.0.inferred.json
  bin/ringo synth --config $cfg --dtype fp8 --out /dev/shm/rf > $OUT/synth.txt 2>&1 || { cat $OUT/synth.txt; exit 1; }
  echo "== $cfg"
  for r in 1 2 3; do
    for v in "--sample" ""; do
      timeout 90 bin/ringo bench --device cuda --model /dev/shm/rf --prompt 512 --gen 128 --context 1k --batch 1 $v > $OUT/rfb.txt 2>&1
      echo "[$v]"; grep -E "decode @|rror|panic" $OUT/rfb.txt
    done
  done
  RINGO_CUDA_STATS=64 timeout 90 bin/ringo bench --device cuda --model /dev/shm/rf --prompt 512 --gen 128 --context 1k --batch 1 --sample > $OUT/st.txt 2>&1
  grep -E "cuda stats: per step|decode @" $OUT/st.txt | tail -3
  rm -rf /dev/shm/rf
done
