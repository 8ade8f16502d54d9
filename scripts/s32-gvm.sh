#!/usr/bin/env bash
# Session 32's last GPU run (branch next/v2m; delete before merging): gemv_fp8v2m / gemv_fp8v2rm (the
# one-row FP8 products on tensor cores, knob gvm): tests, an rf8 A/B, a timeline with the span probes.
set -u
RINGO_CUDA_REGS=1 TEST_BIN=bin/cuda.test BENCH=0 RUN='TestGEMVMMA$|TestRoutePartials$|TestGEMVSingleRow$' TEST_TIMEOUT=120s OUT=$OUT/t scripts/gpu-check.sh > $OUT/t.txt 2>&1
grep -A1 "== Summary" $OUT/t.txt
grep -E -- "--- FAIL|panic|Error|kernels \[|differ|gemv_fp8v2m against" $OUT/t/test.log | head -20
grep -E "gemv_fp8v2r?m " $OUT/t.txt | head -2
export RINGO_CUDA_LIB_PATH=$(grep -o 'RINGO_CUDA_LIB_PATH=.*' $OUT/t.txt | head -1 | cut -d= -f2-)
if ! grep -q -- "panic\|--- FAIL: TestGEMVMMA" $OUT/t/test.log; then
  bin/ringo synth --config bin/rf8.json --dtype fp8 --out /dev/shm/rf8 > /dev/null 2>&1
  TEST_BIN=bin/cuda.test TESTS=0 BENCH=1 BENCHRE=DecodeAB BENCHTIME=2400x RINGO_BENCH_MODEL=/dev/shm/rf8 RINGO_BENCH_AB=";gvm=1;;gvm=1;;gvm=1" OUT=$OUT/ab timeout 100 scripts/gpu-check.sh > $OUT/ab.txt 2>&1
  grep -E "µs|panic|FAIL|rror" $OUT/ab/bench.log | tail -7
  RINGO_CUDA_GV_MMA=1 RINGO_CUDA_TIMELINE=1 RINGO_CUDA_STATS=64 timeout 50 bin/ringo bench --device cuda --model /dev/shm/rf8 --prompt 512 --gen 128 --context 1k --batch 1 > $OUT/tl.txt 2>&1
  awk '/cuda timeline/{c++} c==2' $OUT/tl.txt | grep -E "^cuda timeline|gemv_fp8v2|recg2|k_route_p|probe +(25|26|29):"
  grep -E "decode @" $OUT/tl.txt
fi
