#!/usr/bin/env bash
# Where moe_gummat9q's ~23 µs after its wait go (prepared in the
# thirty-sixth session, run in the thirty-seventh: docs/GPU.md, "After the
# thirty-seventh session").
# Thread 0 of every block (means over the blocks): probe 33 its wait to the
# activation row staged, then over its rounds 34 waiting for them, 35 their
# products, 36 asking for the refills; with probes 6 (start to the wait)
# and 30 (the wait to the end). Waiting ≫ products says the stream (its
# steady ~3.1 TB/s) is what to work on, products ≫ waiting the arithmetic.
#   CGO_ENABLED=0 go test -c -o bin/cuda.test ./backend/cuda/ && go build -o bin/ringo ./cmd/ringo
#   bin/rf8.json: the inferred Ring-flash config with num_hidden_layers 8 (docs/GPU.md)
#   run: bash scripts/s37-guprobe.sh (carry bin; timeout 300), ~3 minutes
set -u
TEST_BIN=bin/cuda.test BENCH=0 RUN='TestFP8MMAMoE$|TestTimeline$' TEST_TIMEOUT=200s OUT=$OUT/t scripts/gpu-check.sh > $OUT/t.txt 2>&1
export RINGO_CUDA_LIB_PATH=$(grep -o 'RINGO_CUDA_LIB_PATH=.*' $OUT/t.txt | head -1 | cut -d= -f2-)
grep -A1 "== Summary" $OUT/t.txt
grep -E -- "--- FAIL|panic" $OUT/t/test.log | head -12
grep -q -- "--- FAIL\|panic" $OUT/t/test.log && exit 1
bin/ringo synth --config bin/rf8.json --dtype fp8 --out /dev/shm/rf8 > /dev/null 2>&1
RINGO_CUDA_TIMELINE=1 RINGO_CUDA_STATS=64 timeout 60 bin/ringo bench --device cuda --model /dev/shm/rf8 --prompt 512 --gen 128 --context 1k --batch 1 > $OUT/tl.txt 2>&1
awk '/cuda timeline/{c++} c==2' $OUT/tl.txt | grep -E "^cuda timeline|moe_gummat|probe +(6|30|3[3-6]):" | head -10
rm -rf /dev/shm/rf8
