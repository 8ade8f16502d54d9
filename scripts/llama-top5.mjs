// llama-top5.mjs: print llama.cpp's top-5 next-token probabilities after a
// prompt of token ids, to cross-check ringo's logits on the same GGUF file
// (`ringo logits --model FILE.gguf --prompt-ids ...`).
//
//   NODE_PATH=/path/to/node_modules node scripts/llama-top5.mjs FILE.gguf 5,100,200
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.NODE_PATH || process.cwd(), "x.js"));
const { getLlama } = await import(require.resolve("node-llama-cpp"));
const [file, idsArg] = process.argv.slice(2);
if (!file || !idsArg) {
  console.error("usage: node llama-top5.mjs FILE.gguf id,id,...");
  process.exit(2);
}
const ids = idsArg.split(",").map(Number);
const llama = await getLlama({ gpu: false });
const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
const ctx = await model.createContext({ contextSize: ids.length + 16 });
const seq = ctx.getSequence();
const res = await seq.controlledEvaluate(ids.map((t, i) => (i === ids.length - 1 ? [t, { generateNext: { probabilities: true } }] : t)));
const probs = [...res[res.length - 1].next.probabilities.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5);
console.log(JSON.stringify({ top5: probs }));
