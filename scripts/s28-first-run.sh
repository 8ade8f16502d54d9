#!/usr/bin/env bash
# The next session's first GPU run (branch next/stream; delete this script before merging).
# Everything below was compiled offline only; each kernel has a bit-identity test.
# Streaming kernels (rows into shared memory by bulk copies, warp_ring), each off by default:
#   gemv_bf16t4n   Ring-mini's qkv|gate with its input norm     RINGO_CUDA_BF16_TMA=1      knob b16t
#   moe_dclt2_fp8  Ring-flash's down projections, slots streamed  RINGO_CUDA_DCL_TMA=1     knob dclt
#   moe_gut2_fp8   Ring-flash's gate|up pairs                   RINGO_CUDA_GU_TMA=1        knob gut
#   gemv_fp8t8n    Ring-flash's input norm inside its qkv|gate  RINGO_CUDA_FP8_NORM_TMA=1  knob f8n
#   gemv_fp8t2     Ring-flash's 4,096-row dense GEMVs           RINGO_CUDA_FP8_TMA2=1      knob f8t2
#   moe_gut2_bf16, moe_dclt2_bf16: Ring-mini's two-kernel MoE (knobs gd=0,gut=1,dclt=1)
#   _b variants with other numbers of stages                    RINGO_CUDA_TMA_ALT=1       knob alt
# Also: gemv_fp8t8 (the default) now runs through gv_stream, and moe_dcl through dcl_slot:
# moe_dcl2_fp8 should still show 102 registers and no local bytes, and the defaults ~1,141 µs
# per step on rf8. TestGEMVSingleRow now also covers 128×128-block FP8 weights.
# Tests first, then A/Bs on the eight-layer Ring-flash model (bin/rf8.json) and on Ring-mini,
# and timelines (~7 minutes).
#   CGO_ENABLED=0 go test -c -o bin/cuda.test ./backend/cuda/ && go build -o bin/ringo ./cmd/ringo
#   python3 -c 'import json; c=json.load(open("testdata/configs/Ring-flash-linear-2.0.inferred.json")); c["num_hidden_layers"]=8; json.dump(c, open("bin/rf8.json","w"))'
#   run: bash scripts/s28-first-run.sh   (carry bin)
set -u
RINGO_CUDA_REGS=1 TEST_BIN=bin/cuda.test BENCH=0 RUN='TestGEMVSingleRow|TestNormGEMV$|TestFastFP8|TestMoEShared$' TEST_TIMEOUT=200s OUT=$OUT/t scripts/gpu-check.sh > $OUT/t.txt 2>&1
grep -A1 "== Summary" $OUT/t.txt
grep -E "cuda kernel (gemv_fp8t[28]n?|gemv_fp8v2|gemv_bf16[vt]4n(_b)?|moe_dclt?2_(fp8|bf16)(_b)?|moe_gut?2_(fp8|bf16)(_b)?) " $OUT/t/test.log | sort -u
grep -E -- "--- FAIL|panic|gemv_bf16t4n|moe_gut2|gemv_fp8t8|fp8:true" $OUT/t/test.log | head -24
grep -q -- "--- FAIL\|panic" $OUT/t/test.log && exit 1
export RINGO_CUDA_LIB_PATH=$(grep -o 'RINGO_CUDA_LIB_PATH=.*' $OUT/t.txt | head -1 | cut -d= -f2-)
bin/ringo synth --config bin/rf8.json --dtype fp8 --out /dev/shm/rf8 > /dev/null 2>&1
TEST_BIN=bin/cuda.test TESTS=0 BENCH=1 BENCHRE=DecodeAB BENCHTIME=5000x RINGO_BENCH_MODEL=/dev/shm/rf8 RINGO_BENCH_AB=";dclt=1;gut=1;f8n=1;f8t2=1;dclt=1,gut=1,f8n=1,f8t2=1;dclt=1,gut=1,alt=1;;dclt=1;gut=1;f8n=1;f8t2=1;dclt=1,gut=1,f8n=1,f8t2=1;dclt=1,gut=1,alt=1;" OUT=$OUT/ab scripts/gpu-check.sh > $OUT/ab.txt 2>&1
grep -E "µs|panic|FAIL|rror" $OUT/ab/bench.log | tail -16
RINGO_CUDA_DCL_TMA=1 RINGO_CUDA_GU_TMA=1 RINGO_CUDA_FP8_NORM_TMA=1 RINGO_CUDA_FP8_TMA2=1 RINGO_CUDA_TIMELINE=1 RINGO_CUDA_STATS=64 timeout 60 bin/ringo bench --device cuda --model /dev/shm/rf8 --prompt 512 --gen 128 --context 1k --batch 1 > $OUT/tl.txt 2>&1
awk '/cuda timeline/{c++} c==2' $OUT/tl.txt | grep -E "^  \S|probe  [6789]:" | head -12
rm -rf /dev/shm/rf8
STAGES=none scripts/gpu-bench.sh > $OUT/rm.txt 2>&1
TEST_BIN=bin/cuda.test TESTS=0 BENCH=1 BENCHRE=DecodeAB BENCHTIME=4000x RINGO_BENCH_MODEL=/dev/shm/rm RINGO_BENCH_AB=";b16t=1;b16t=1,alt=1;gd=0;gd=0,gut=1;gd=0,dclt=1;gd=0,gut=1,dclt=1;gd=0,gut=1,dclt=1,alt=1;;b16t=1;gd=0,gut=1,dclt=1;" OUT=$OUT/abm scripts/gpu-check.sh > $OUT/abm.txt 2>&1
grep -E "µs|panic|FAIL|rror" $OUT/abm/bench.log | tail -12
RINGO_CUDA_BF16_TMA=1 RINGO_CUDA_TIMELINE=1 RINGO_CUDA_STATS=64 timeout 60 bin/ringo bench --device cuda --model /dev/shm/rm --prompt 512 --gen 128 --context 1k --batch 1 > $OUT/tlm.txt 2>&1
awk '/cuda timeline/{c++} c==2' $OUT/tlm.txt | grep -E "^  \S|probe 2[56]:" | head -10
