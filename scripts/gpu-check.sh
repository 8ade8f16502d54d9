#!/usr/bin/env bash
# gpu-check.sh: one call on a GPU machine that reports the environment, runs
# the CUDA backend's correctness tests and benchmarks, and prints a summary.
#
#   scripts/gpu-check.sh            # tests + benchmarks
#   TESTS=0 scripts/gpu-check.sh    # benchmarks only
#   BENCH=0 scripts/gpu-check.sh    # tests only
#   TEST_BIN=bin/cuda.test scripts/gpu-check.sh   # use the prebuilt test binary even where Go is installed
#
# Uses `go test` when Go is installed; otherwise a test binary prebuilt with
#   CGO_ENABLED=0 go test -c -o bin/cuda.test ./backend/cuda/
# Logs go to $OUT (or ./gpu-check-out).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUTDIR=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUTDIR"
TESTS=${TESTS:-1}
BENCH=${BENCH:-1}
BENCHTIME=${BENCHTIME:-20x}
RUN=${RUN:-.}
BENCHRE=${BENCHRE:-.}

echo "== GPU"
if command -v nvidia-smi >/dev/null; then
	nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,compute_cap --format=csv,noheader
	nvidia-smi | grep -i "cuda version" || true
else
	echo "nvidia-smi: not found"
fi

echo "== CUDA libraries"
dirs=""
add() { case ":$dirs:" in *":$1:"*) ;; *) dirs="$dirs${dirs:+:}$1" ;; esac; }
for f in $(ldconfig -p 2>/dev/null | grep -E 'libcuda\.so|libnvrtc|libcublasLt' | awk '{print $NF}'); do
	echo "ldconfig: $f"
done
sp=""
if command -v python3 >/dev/null; then
	sp=$(python3 -c 'import site; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
fi
for f in $(find $sp /usr/local/cuda* /opt -maxdepth 7 \( -name 'libnvrtc.so*' -o -name 'libnvrtc-*.so*' -o -name 'libcublasLt.so*' -o -name 'libcublasLt-*.so*' \) 2>/dev/null | grep -v builtins | sort -u); do
	echo "found: $f"
	add "$(dirname "$f")"
done
export RINGO_CUDA_LIB_PATH="${RINGO_CUDA_LIB_PATH:-}${RINGO_CUDA_LIB_PATH:+:}$dirs"
echo "RINGO_CUDA_LIB_PATH=$RINGO_CUDA_LIB_PATH"

echo "== Go"
if [ -n "${TEST_BIN:-}" ]; then # a prebuilt test binary, even where Go is installed
	BIN=$(realpath "$TEST_BIN")
	echo "using prebuilt $BIN"
elif command -v go >/dev/null; then
	go version
	BIN=""
else
	echo "go: not installed on this machine"
	BIN="$ROOT/bin/cuda.test"
	if [ ! -x "$BIN" ]; then
		echo "no prebuilt $BIN either: build it with 'CGO_ENABLED=0 go test -c -o bin/cuda.test ./backend/cuda/'"
		exit 1
	fi
	echo "using prebuilt $BIN"
fi

runtests() { # args: go test flags without the -test. prefix
	if [ -z "$BIN" ]; then
		CGO_ENABLED=0 go test ./backend/cuda/ -count=1 "$@"
	else
		local a=()
		for x in "$@"; do
			case $x in
			-*) a+=("-test.${x#-}") ;;
			*) a+=("$x") ;;
			esac
		done
		(cd backend/cuda && "$BIN" "${a[@]}")
	fi
}

rc=0
if [ "$TESTS" = 1 ]; then
	echo "== Tests"
	runtests -v -run "$RUN" -timeout ${TEST_TIMEOUT:-200s} 2>&1 | tee "$OUTDIR/test.log"
	[ "${PIPESTATUS[0]}" = 0 ] || rc=1
fi
if [ "$BENCH" = 1 ]; then
	echo "== Benchmarks"
	runtests -v -run '^$' -bench "$BENCHRE" -benchtime "$BENCHTIME" -timeout ${BENCH_TIMEOUT:-280s} 2>&1 | tee "$OUTDIR/bench.log"
	[ "${PIPESTATUS[0]}" = 0 ] || rc=1
fi

echo "== Summary"
if [ -f "$OUTDIR/test.log" ]; then
	echo "tests: $(grep -c -- '^--- PASS' "$OUTDIR/test.log") passed, $(grep -c -- '--- FAIL' "$OUTDIR/test.log") failed, $(grep -c -- '^--- SKIP' "$OUTDIR/test.log") skipped"
	grep -E -- '--- FAIL|^panic|cuda: ' "$OUTDIR/test.log" | head -20
	grep -E 'worst row error' "$OUTDIR/test.log" | sed 's/^ *//'
fi
if [ -f "$OUTDIR/bench.log" ]; then
	grep -E '^Benchmark' "$OUTDIR/bench.log"
fi
exit $rc
