// llama-bench.mjs: time llama.cpp (through node-llama-cpp) on a GGUF file, the
// same way `ringo bench` times ringo: prefill of N random tokens in one batch,
// then M single-token decode steps. Prints one JSON line.
//
//   npm install node-llama-cpp@3.22.1        (outside the repository)
//   node scripts/llama-bench.mjs FILE.gguf [prompt=512] [gen=32] [threads=2]
//
// Run it from a directory where node_modules/node-llama-cpp is installed, e.g.
//   NODE_PATH=/work/llama/node_modules node scripts/llama-bench.mjs ...
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.NODE_PATH || process.cwd(), "x.js"));
const { getLlama } = await import(require.resolve("node-llama-cpp"));

const [file, promptArg = "512", genArg = "32", threadsArg = "2"] = process.argv.slice(2);
if (!file) {
  console.error("usage: node llama-bench.mjs FILE.gguf [prompt] [gen] [threads]");
  process.exit(2);
}
const nPrompt = Number(promptArg), nGen = Number(genArg), threads = Number(threadsArg);

const llama = await getLlama({ gpu: false, maxThreads: threads });
const model = await llama.loadModel({ modelPath: file, gpuLayers: 0, useMmap: true });
const context = await model.createContext({ contextSize: nPrompt + nGen + 16, batchSize: nPrompt, threads });
const seq = context.getSequence();

let seed = 1;
const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648);
const nVocab = model.fileInfo?.metadata?.tokenizer?.ggml?.tokens?.length ?? 6000;
const tok = () => 100 + (rand() % (nVocab - 200));
const tokens = Array.from({ length: nPrompt }, tok);

// warm-up: touch the weights
await seq.evaluateWithoutGeneratingNewTokens(tokens.slice(0, 8));
await seq.clearHistory();

let t0 = performance.now();
await seq.evaluateWithoutGeneratingNewTokens(tokens);
const prefillS = (performance.now() - t0) / 1000;

t0 = performance.now();
let n = 0;
for (let i = 0; i < nGen; i++) {
  await seq.evaluateWithoutGeneratingNewTokens([tok()]);
  n++;
}
const decodeS = (performance.now() - t0) / 1000;
console.log(JSON.stringify({
  engine: "llama.cpp (node-llama-cpp 3.22.1)", file, threads,
  prompt_tokens: nPrompt, prefill_tok_s: nPrompt / prefillS,
  gen_tokens: n, decode_tok_s: n / decodeS,
}));
await context.dispose();
await model.dispose();
