#!/usr/bin/env bash
# The token draws on the GPU (docs/GPU.md, "Token draws"): the draw tests and
# the fixtures, then the whole Ring-flash FP8 (synthetic) at 1K, one process per
# figure, alternated twice: the model's steps alone, bench --sample drawn on the
# GPU, on the host (--host-draw), and greedy on the GPU; then a timeline of the
# draw kernels. Build first (the device machine has no Go toolchain):
#   CGO_ENABLED=0 go test -c -o bin/cuda.test ./backend/cuda/ && go build -o bin/ringo ./cmd/ringo
# and run `bash scripts/gpu-draw-bench.sh` there with bin/ carried and $OUT set
# (~6 minutes on an H200, 130 s of it writing the checkpoint).
set -u
TEST_BIN=bin/cuda.test BENCH=0 RUN='TestDrawTokens$|TestGenerateDrawn$|TestFixtures$|TestFusedDecode$' TEST_TIMEOUT=300s OUT=$OUT/t scripts/gpu-check.sh > $OUT/t.txt 2>&1
export RINGO_CUDA_LIB_PATH=$(grep -o 'RINGO_CUDA_LIB_PATH=.*' $OUT/t.txt | head -1 | cut -d= -f2-)
grep -A1 "== Summary" $OUT/t.txt
grep -E -- "--- FAIL|--- SKIP|panic|draw_test.go" $OUT/t/test.log | head -20
grep -q -- "--- FAIL\|panic" $OUT/t/test.log && exit 1
bin/ringo synth --config testdata/configs/Ring-flash-linear-2.0.inferred.json --dtype fp8 --out /dev/shm/rf > $OUT/synth.txt 2>&1
for v in "" "--sample" "--sample --host-draw" "--sample --temperature 0" "" "--sample" "--sample --host-draw" "--sample --temperature 0"; do
  timeout 60 bin/ringo bench --device cuda --model /dev/shm/rf --prompt 512 --gen 128 --context 1k --batch 1 $v > $OUT/rfb.txt 2>&1
  echo "[$v]"; grep -E "decode @|rror|panic" $OUT/rfb.txt
done
RINGO_CUDA_TIMELINE=1 RINGO_CUDA_STATS=64 timeout 100 bin/ringo bench --device cuda --model /dev/shm/rf --prompt 512 --gen 128 --context 1k --batch 1 --sample > $OUT/tl.txt 2>&1
awk '/cuda timeline/{c++} c==2' $OUT/tl.txt | grep -E "^cuda timeline|k_draw" | head -5
grep -E "cuda stats" $OUT/tl.txt | tail -2
