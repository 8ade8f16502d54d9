#!/usr/bin/env python3
"""cmp_logits.py A.safetensors B.safetensors ...: for every pair, top-1 agreement,
the largest and median per-row error relative to the row's largest |logit|, and
the mean KL divergence KL(softmax(A) || softmax(B)) over rows, in nats (tensor
prompt_logits [T, V], as written by `ringo logits` and torch_ref.py --save-logits)."""
import itertools
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import read_safetensors  # noqa: E402

L = {os.path.basename(f): read_safetensors(f, "cpu")["prompt_logits"].float() for f in sys.argv[1:] if os.path.exists(f)}
V = min(t.shape[-1] for t in L.values())
L = {k: t.reshape(-1, t.shape[-1])[:, :V] for k, t in L.items()}
out = []
for (a, x), (b, y) in itertools.combinations(L.items(), 2):
    n = min(x.shape[0], y.shape[0])
    x, y = x[:n], y[:n]
    out.append({"a": a, "b": b, "rows": n, "top1_agreement": (x.argmax(-1) == y.argmax(-1)).float().mean().item(),
                "max_row_rel_err": ((x - y).abs().amax(-1) / y.abs().amax(-1)).amax().item(),
                "median_row_rel_err": ((x - y).abs().amax(-1) / y.abs().amax(-1)).median().item(),
                "mean_kl": (x.log_softmax(-1).exp() * (x.log_softmax(-1) - y.log_softmax(-1))).sum(-1).mean().item()})
print(json.dumps(out, indent=1))
