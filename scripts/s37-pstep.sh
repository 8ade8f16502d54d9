#!/usr/bin/env bash
# The thirty-seventh session's persistent-step skeleton: TestPersistentStep
# (k_pstep reads every byte once) and BenchmarkPersistentStep (a whole
# Ring-flash / Ring-mini decode step's bytes streamed by one persistent
# kernel with grid barriers between phases, no arithmetic, against a chain
# of plain read kernels; docs/GPU.md, "After the thirty-seventh session").
# Build first: CGO_ENABLED=0 go test -c -o bin/cuda.test ./backend/cuda/
# run: bash scripts/s37-pstep.sh (carry bin; timeout 300), ~2 minutes
set -u
TEST_BIN=bin/cuda.test BENCH=1 RUN='TestPersistentStep$' BENCHRE='PersistentStep$' BENCHTIME=1x TEST_TIMEOUT=120s BENCH_TIMEOUT=200s OUT=$OUT/t scripts/gpu-check.sh > $OUT/t.txt 2>&1
echo "rc $?"
grep -A3 "== Summary" $OUT/t.txt
grep -E -- "--- FAIL|panic|pstep_test" $OUT/t/test.log | head -12
grep -E "pstep_test|FAIL|panic" $OUT/t/bench.log | sed 's/^ *//' | head -60
