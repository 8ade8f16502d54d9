#!/usr/bin/env bash
# cpu-vs-llama.sh: ringo and llama.cpp on the same GGUF file, same thread
# count, alternating runs (the machine is noisy): prefill of P random tokens
# and D decode steps after it.
#
#   NODE_PATH=/path/to/node_modules scripts/cpu-vs-llama.sh FILE.gguf [P=512] [D=32] [threads=2] [rounds=3]
# needs `npm install node-llama-cpp@3.22.1` somewhere (NODE_PATH) and ringo on PATH or RINGO=...
set -euo pipefail
f=$1; p=${2:-512}; d=${3:-32}; t=${4:-2}; rounds=${5:-3}
ringo=${RINGO:-ringo}
here=$(cd "$(dirname "$0")" && pwd)
for r in $(seq "$rounds"); do
	node "$here/llama-bench.mjs" "$f" "$p" "$d" "$t" 2>/dev/null | tail -1
	"$ringo" bench --model "$f" --threads "$t" --prompt "$p" --gen "$d" --context "$p" --json |
		python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({"engine":"ringo","prefill_tok_s":r["prefill_tok_s"],"decode_tok_s":r["decode"][0]["decode_tok_s"]}))'
done
