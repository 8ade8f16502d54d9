#!/usr/bin/env bash
# gpu-bench.sh: one call on a GPU machine that benchmarks ringo's CUDA backend
# on a synthetic full-size Ring-mini-linear-2.0 checkpoint and runs the eager
# PyTorch reference (scripts/torch_ref.py) on the same checkpoint, side by side.
#
#   CGO_ENABLED=0 go build -o bin/ringo ./cmd/ringo      # here; bin/ is git-ignored (carry it)
#   scripts/gpu-bench.sh                                 # on the GPU machine
#
# Environment: MODEL (default /dev/shm/rm; synthesized when missing), CONFIG
# (default testdata/configs/Ring-mini-linear-2.0.json), STAGES (default
# "bench,bench32k,logits,torch,check"; also "decode": decode only, with and without CUDA graphs,
# "profile": GPU time per kernel of a decode step, "fp8": the bench stage with the weights quantized
# to FP8 on load, "pdl": prefill and decode with programmatic dependent launch on, off, on), ROWS (rows per prefill pass, default 0: the engine's, 32768 on a GPU of 64 GiB or more), QUANT (--quantize for the decode and
# profile stages, e.g. fp8), "ncu": Nsight Compute's duration and DRAM bytes of every kernel of two eager
# decode steps at batch 1 (scripts/ncu_summary.py sums them per kernel name; NCU_SKIP, NCU_COUNT; NCU_FULL=regex
# adds every ncu section for NCU_FULL_COUNT matching kernels), DTYPE (synth --dtype when the model is synthesized: bf16 or fp8), ARGS
# (stage "args": one `ringo bench --device cuda --model $MODEL $ARGS`; stage "ab": that bench under each
# setting of AB, e.g. AB="-;RINGO_CUDA_GEMV_T8=1", two rounds), "decodeab": BenchmarkDecodeAB, decode
# settings alternated step by step in one process (RINGO_BENCH_AB, ABSTEPS; TEST_BIN as gpu-check.sh).
# Logs go to $OUT (or ./gpu-bench-out).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUTDIR=${OUT:-$ROOT/gpu-bench-out}
mkdir -p "$OUTDIR"
MODEL=${MODEL:-/dev/shm/rm}
CONFIG=${CONFIG:-testdata/configs/Ring-mini-linear-2.0.json}
STAGES=${STAGES:-bench,bench32k,logits,torch,check}
ROWS=${ROWS:-0}
RINGO=$ROOT/bin/ringo
IDS=${IDS:-151,2047,9,33,1200,77,5,98000,431,12,6,700,3,19,4410,28,150000,61,7,300,88,1024,45,2,13000,17,640,29,5000,36,8,111}
has() { case ",$STAGES," in *",$1,"*) return 0 ;; esac; return 1; }
log() { echo "== $(date +%T) $*"; }

# CUDA libraries for purego (as gpu-check.sh)
dirs=""
sp=""
PY=python3
[ -x /opt/torch/.venv/bin/python ] && PY=/opt/torch/.venv/bin/python
sp=$($PY -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)
for f in $(find $sp /usr/local/cuda* -maxdepth 7 \( -name 'libnvrtc.so*' -o -name 'libcublasLt.so*' \) 2>/dev/null | grep -v -e builtins -e stubs | sort -u); do
	d=$(dirname "$f")
	case ":$dirs:" in *":$d:"*) ;; *) dirs="$dirs${dirs:+:}$d" ;; esac
done
export RINGO_CUDA_LIB_PATH="${RINGO_CUDA_LIB_PATH:-}${RINGO_CUDA_LIB_PATH:+:}$dirs"

log "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader
df -h /dev/shm /tmp | tail -n +1
free -g | head -2
nproc

if [ ! -f "$MODEL/config.json" ]; then
	log "synth $CONFIG -> $MODEL"
	s=$(date +%s.%N)
	$RINGO synth --config "$CONFIG" --dtype "${DTYPE:-bf16}" --out "$MODEL" 2>&1 | tr '\r' '\n' | tail -1
	echo "synth seconds: $(awk "BEGIN{print $(date +%s.%N) - $s}")"
	du -sh "$MODEL"
fi

if has bench; then
	log "ringo bench: prefill 4k,32k,128k ($ROWS rows per pass), decode batch 1 and 64 at 1k context"
	timeout 300 $RINGO bench --device cuda --model "$MODEL" --prompt 4k,32k,128k --batch-rows "$ROWS" --gen 64 --context 1k --batch 1,64 2>&1 | tee "$OUTDIR/ringo_bench.txt"
fi
if has bench32k; then
	log "ringo bench: decode batch 1 at 32k context"
	timeout 120 $RINGO bench --device cuda --model "$MODEL" --prompt 4k --batch-rows "$ROWS" --gen 64 --context 32k --batch 1 2>&1 | tee "$OUTDIR/ringo_bench32k.txt"
fi
Q=""
[ -n "${QUANT:-}" ] && Q="--quantize $QUANT"
if has fp8; then
	log "ringo bench, FP8 on load: prefill 4k,32k ($ROWS rows per pass), decode batch 1 and 64 at 1k context"
	timeout 400 $RINGO bench --device cuda --quantize fp8 --model "$MODEL" --prompt 4k,32k --batch-rows "$ROWS" --gen 64 --context 1k --batch 1,64 2>&1 | tee "$OUTDIR/ringo_bench_fp8.txt"
fi
if has decode; then
	# decode only, with CUDA graphs (default) and without; RINGO_CUDA_STATS prints kernels and driver calls per step
	for g in "" 1; do
		log "ringo bench $Q: decode batch 1 and 64 at 1k and 32k context (RINGO_CUDA_NO_GRAPHS=$g)"
		RINGO_CUDA_NO_GRAPHS=$g RINGO_CUDA_STATS=32 timeout 200 $RINGO bench --device cuda $Q --model "$MODEL" --prompt 512 --gen 64 --context 1k,32k --batch 1,64 2>&1 | tee "$OUTDIR/ringo_decode$g.txt"
	done
fi
if has pdl; then
	# programmatic dependent launch on / off / on (RINGO_CUDA_NO_PDL), same model, one after the other
	for p in "" 1 ""; do
		log "ringo bench $Q: prefill 4k,32k, decode batch 1 and 64 at 1k (RINGO_CUDA_NO_PDL=$p)"
		RINGO_CUDA_NO_PDL=$p RINGO_CUDA_STATS=64 timeout 200 $RINGO bench --device cuda $Q --model "$MODEL" --prompt 4k,32k --batch-rows "$ROWS" --gen 64 --context 1k --batch 1,64 2>&1 | tee -a "$OUTDIR/ringo_pdl$p.txt"
	done
fi
if has args; then
	log "ringo bench --device cuda --model $MODEL ${ARGS:-}"
	RINGO_CUDA_STATS=64 timeout ${ARGS_TIMEOUT:-300} $RINGO bench --device cuda --model "$MODEL" ${ARGS:-} 2>&1 | tee "$OUTDIR/ringo_args.txt"
fi
if has ab; then
	# the same bench under each setting of AB (';'-separated lists of VAR=value, "-" for none), in turn
	IFS=';' read -ra settings <<<"${AB:--}"
	for round in 1 2; do
		for st in "${settings[@]}"; do
			[ "$st" = "-" ] && st=""
			log "round $round: $st ringo bench --device cuda --model $MODEL ${ARGS:-}"
			env $st timeout 200 $RINGO bench --device cuda --model "$MODEL" ${ARGS:-} 2>&1 | grep -E "tok/s|error|panic" | tee -a "$OUTDIR/ringo_ab.txt"
		done
	done
fi
if has decodeab; then
	# decode settings alternated step by step in one process (BenchmarkDecodeAB, backend/cuda):
	# RINGO_BENCH_AB lists them (';'-separated knob=value lists, see bench_test.go), ABSTEPS the steps over all of them
	log "BenchmarkDecodeAB on $MODEL: ${RINGO_BENCH_AB:-default settings}"
	TESTS=0 BENCH=1 BENCHRE=DecodeAB BENCHTIME="${ABSTEPS:-9000x}" RINGO_BENCH_MODEL="$MODEL" OUT="$OUTDIR/decodeab" \
		timeout 300 scripts/gpu-check.sh 2>&1 | grep -E "bench_test|^Benchmark|FAIL|panic|rror" | tee "$OUTDIR/decodeab.txt"
fi
if has profile; then
	log "ringo bench $Q: GPU time per kernel of a decode step (eager, events around every kernel)"
	RINGO_CUDA_PROFILE=1 RINGO_CUDA_STATS=64 timeout 150 $RINGO bench --device cuda $Q --model "$MODEL" --prompt 512 --gen 64 --context 1k --batch 1 2>&1 | tee "$OUTDIR/ringo_profile.txt"
fi
if has ncu; then
	NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
	log "ncu ($NCU): kernels of decode steps at batch 1, eager, L2 not flushed, clocks left alone"
	# the first NCU_SKIP launches are the rooflines, the prompt pass and the first decode steps
	RINGO_CUDA_NO_GRAPHS=1 timeout 400 "$NCU" --clock-control none --cache-control none --csv \
		--metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__block_size,launch__registers_per_thread \
		--launch-skip "${NCU_SKIP:-1200}" --launch-count "${NCU_COUNT:-456}" \
		$RINGO bench --device cuda $Q --model "$MODEL" --prompt 64 --gen 16 --context 1k --batch 1 >"$OUTDIR/ncu.csv" 2>"$OUTDIR/ncu.err"
	echo "rc $?"
	tail -3 "$OUTDIR/ncu.err"
	$PY scripts/ncu_summary.py "$OUTDIR/ncu.csv" "${NCU_STEPS:-2}" | tee "$OUTDIR/ncu_summary.txt"
	if [ -n "${NCU_FULL:-}" ]; then
		# every section (stall reasons, memory traffic, source hot spots) of NCU_FULL_COUNT decode kernels matching NCU_FULL
		log "ncu --set full on kernels matching $NCU_FULL"
		RINGO_CUDA_NO_GRAPHS=1 timeout 300 "$NCU" --clock-control none --cache-control none --set full -k "regex:$NCU_FULL" \
			--launch-skip "${NCU_FULL_SKIP:-400}" --launch-count "${NCU_FULL_COUNT:-8}" \
			$RINGO bench --device cuda $Q --model "$MODEL" --prompt 64 --gen 8 --context 1k --batch 1 >"$OUTDIR/ncu_full.txt" 2>&1
		echo "rc $?"
	fi
fi
CMP=""
if has logits; then
	for mode in fast precise; do
		log "ringo logits ($mode) on a ${#IDS}-character id list"
		p=false
		[ $mode = precise ] && p=true
		timeout 90 $RINGO logits --device cuda --precise=$p --model "$MODEL" --prompt-ids "$IDS" --out /tmp/ringo_$mode.safetensors 2>&1 | tail -3
		[ -f /tmp/ringo_$mode.safetensors ] && CMP="$CMP${CMP:+,}/tmp/ringo_$mode.safetensors"
	done
fi
if has torch; then
	log "torch reference ($PY)"
	timeout 300 $PY scripts/torch_ref.py --model "$MODEL" --prefill 4096,32768 --decode 1,64 --context 1024 --gen 16 \
		--logits-ids "$IDS" --compare "$CMP" >"$OUTDIR/torch.json" 2>"$OUTDIR/torch.err"
	echo "rc $?"
	cat "$OUTDIR/torch.json"
	tail -5 "$OUTDIR/torch.err"
fi
if has check; then
	# correctness cross-check: ringo (fast, precise) vs torch (BF16, FP32) logits on a short prompt
	for dt in fp32 bf16; do
		log "torch reference logits ($dt)"
		f=""
		[ $dt = fp32 ] && f=--fp32
		timeout 200 $PY scripts/torch_ref.py --model "$MODEL" $f --prefill "" --decode "" --logits-ids "$IDS" --compare "$CMP" \
			--save-logits /tmp/torch_$dt.safetensors >"$OUTDIR/torch_logits_$dt.json" 2>"$OUTDIR/torch_logits_$dt.err"
		echo "rc $?"
		tail -3 "$OUTDIR/torch_logits_$dt.err"
	done
	$PY scripts/cmp_logits.py /tmp/ringo_precise.safetensors /tmp/ringo_fast.safetensors /tmp/torch_fp32.safetensors /tmp/torch_bf16.safetensors | tee "$OUTDIR/cmp_logits.json"
fi
log "done"
