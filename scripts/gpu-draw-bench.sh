#!/usr/bin/env bash
# The token draws on the GPU (docs/GPU.md, "Token draws"): the draw tests and
# the fixtures, then the whole Ring-flash FP8 (synthetic) at 1K, one
# `ringo bench` process per figure, the settings in SETS ('|'-separated flag
# sets; by default the model's steps alone, bench --sample drawn on the GPU
# and on the host, greedy, top-k 40 and top-p 0.95) taken in turns ROUNDS
# times (default 1; ~30 s per figure after 130 s writing the checkpoint).
# Build first (the device machine has no Go toolchain):
#   CGO_ENABLED=0 go test -c -o bin/cuda.test ./backend/cuda/ && go build -o bin/ringo ./cmd/ringo
# then run `bash scripts/gpu-draw-bench.sh` there with bin/ carried and $OUT set.
# The thirty-fourth session's tables: ROUNDS=2 with the first four sets, then
# ROUNDS=2 with SETS='--sample --top-k 40|--sample --top-k 40 --host-draw' and
# one round of the top-p pair.
set -u
SETS=${SETS:-"|--sample|--sample --host-draw|--sample --temperature 0|--sample --top-k 40|--sample --top-k 40 --host-draw|--sample --top-p 0.95|--sample --top-p 0.95 --host-draw"}
ROUNDS=${ROUNDS:-1}
CONFIG=${CONFIG:-testdata/configs/Ring-flash-linear-2.0.inferred.json}
DTYPE=${DTYPE:-fp8}
TEST_BIN=bin/cuda.test BENCH=0 RUN='TestDrawTokens$|TestDrawTokensFiltered$|TestGenerateDrawn$|TestFixtures$' TEST_TIMEOUT=300s OUT=$OUT/t scripts/gpu-check.sh > $OUT/t.txt 2>&1
export RINGO_CUDA_LIB_PATH=$(grep -o 'RINGO_CUDA_LIB_PATH=.*' $OUT/t.txt | head -1 | cut -d= -f2-)
grep -A1 "== Summary" $OUT/t.txt
grep -E -- "--- FAIL|--- SKIP|panic|draw_test.go" $OUT/t/test.log | head -20
grep -q -- "--- FAIL\|panic" $OUT/t/test.log && exit 1
bin/ringo synth --config "$CONFIG" --dtype "$DTYPE" --out /dev/shm/rf > $OUT/synth.txt 2>&1
IFS='|' read -r -a sets <<< "$SETS"
for _ in $(seq "$ROUNDS"); do
  for v in "${sets[@]}"; do
    timeout 60 bin/ringo bench --device cuda --model /dev/shm/rf --prompt 512 --gen 128 --context 1k --batch 1 $v > $OUT/rfb.txt 2>&1
    echo "[$v]"; grep -E "decode @|rror|panic" $OUT/rfb.txt
  done
done
rm -rf /dev/shm/rf
