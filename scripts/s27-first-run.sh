#!/usr/bin/env bash
# next session's first GPU run (branch next/fp8-v8; delete this script before merging):
# gemv_fp8v8 (eight rows per warp: Ring-flash's qkv|gate in one wave) and moe_gu4_fp8
# (four gate|up pairs per warp), compiled offline only; moe_dcl and gu_pairs now sum through
# gv_rows_chunk (TestFastFP8 checks them bit for bit). Tests first, then an A/B on
# Ring-flash shapes (eight layers, FP8; bin/rf8.json as in bin/run152.sh: the inferred
# Ring-flash config with num_hidden_layers 8) and a timeline of the best guess.
#   CGO_ENABLED=0 go test -c -o bin/cuda.test ./backend/cuda/ && go build -o bin/ringo ./cmd/ringo
#   python3 -c 'import json; c=json.load(open("testdata/configs/Ring-flash-linear-2.0.inferred.json")); c["num_hidden_layers"]=8; json.dump(c, open("bin/rf8.json","w"))'
#   run: bash scripts/s27-first-run.sh   (carry bin)
set -u
RINGO_CUDA_REGS=1 TEST_BIN=bin/cuda.test BENCH=0 RUN='TestGEMVSingleRow|TestFastFP8' TEST_TIMEOUT=150s OUT=$OUT/t scripts/gpu-check.sh > $OUT/t.txt 2>&1
grep -A1 "== Summary" $OUT/t.txt
grep -E "cuda kernel (gemv_fp8v[248]|moe_gu[24]_fp8|moe_dcl\S*_fp8) " $OUT/t/test.log | sort -u
grep -E -- "--- FAIL|panic|gemv_fp8v8|moe_gu4" $OUT/t/test.log | head -12
export RINGO_CUDA_LIB_PATH=$(grep -o 'RINGO_CUDA_LIB_PATH=.*' $OUT/t.txt | head -1 | cut -d= -f2-)
bin/ringo synth --config bin/rf8.json --dtype fp8 --out /dev/shm/rf8 > /dev/null 2>&1
TEST_BIN=bin/cuda.test TESTS=0 BENCH=1 BENCHRE=DecodeAB BENCHTIME=4200x RINGO_BENCH_MODEL=/dev/shm/rf8 RINGO_BENCH_AB=";f8r=8;gu2=4;f8r=8,gu2=4;f8r=8,gu2=4,dcl=4;dcl=1;" OUT=$OUT/ab scripts/gpu-check.sh > $OUT/ab.txt 2>&1
grep -E "µs|panic|FAIL|rror" $OUT/ab/bench.log | tail -8
RINGO_CUDA_FP8_ROWS=8 RINGO_CUDA_GU_PAIRS=4 RINGO_CUDA_TIMELINE=1 RINGO_CUDA_STATS=64 bin/ringo bench --device cuda --model /dev/shm/rf8 --prompt 512 --gen 128 --context 1k --batch 1 > $OUT/tl.txt 2>&1
awk '/cuda timeline/{c++} c==2' $OUT/tl.txt | grep -E "^  \S|probe  [6789]:"  # probes 6, 7: moe_gu (start to wait, first warp done after it); 8, 9: moe_dcl (start to wait, first block done after it)
grep -E "decode @" $OUT/tl.txt
