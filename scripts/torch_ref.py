#!/usr/bin/env python3
"""torch_ref.py: a straightforward eager PyTorch implementation of the
Ring-linear 2.0 forward pass (docs: /work/shared/spec/architecture.md), used as
the side-by-side baseline for ringo's CUDA backend and as a correctness check.

Written from the spec: BF16 weights on the GPU, BF16 matrix products, FP32
residual stream / norms / router / lm_head, lightning attention in FP32 in the
chunked form (C = 64, chunks batched, a loop over chunks for the state), MoE as
a loop over the selected experts with index_select/index_add_, softmax layers
with torch's scaled_dot_product_attention.

    torch_ref.py --model DIR --prefill 4096,32768 --decode 1,64 --context 1024
    torch_ref.py --model DIR --logits-ids 1,2,3 --compare ringo_logits.safetensors

Prints one JSON object (timings in tok/s; errors recorded, not raised).
"""
import argparse
import json
import math
import os
import struct
import sys
import time
import traceback

import torch
import torch.nn.functional as F

DEV = "cuda"


# ---------------------------------------------------------------------------
# safetensors reading (the `safetensors` package when installed, else the
# format by hand: u64 header length, JSON header, raw little-endian data)

DT = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "I32": torch.int32, "I64": torch.int64}


def read_safetensors(path, device=DEV):
    try:
        from safetensors.torch import load_file
        return load_file(path, device=device)
    except ImportError:
        pass
    out = {}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        base = 8 + n
        for name, info in hdr.items():
            if name == "__metadata__":
                continue
            a, b = info["data_offsets"]
            f.seek(base + a)
            buf = bytearray(f.read(b - a))
            t = torch.frombuffer(buf, dtype=torch.uint8) if b > a else torch.empty(0, dtype=torch.uint8)
            out[name] = t.view(DT[info["dtype"]]).reshape(info["shape"]).to(device)
    return out


def load_model(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    W = {}
    for fn in sorted(os.listdir(d)):
        if fn.endswith(".safetensors"):
            W.update(read_safetensors(os.path.join(d, fn)))
    return cfg, W


# ---------------------------------------------------------------------------
# model


class Model:
    def __init__(self, cfg, W, convention="sglang", dtype=torch.bfloat16):
        self.c = cfg
        self.dt = dtype  # weights and matrix products (BF16; FP32 for checking)
        cv = lambda t: t.to(dtype)
        self.D = cfg["hidden_size"]
        self.H = cfg["num_attention_heads"]
        self.Hkv = cfg["num_key_value_heads"]
        self.d = cfg.get("head_dim") or self.D // self.H
        self.L = cfg["num_hidden_layers"]
        self.G = cfg.get("layer_group_size", 1)
        self.Gn = cfg.get("group_norm_size", 1)
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.E = cfg["num_experts"]
        self.topk = cfg["num_experts_per_tok"]
        self.ngroup = cfg.get("n_group", 1)
        self.topkg = cfg.get("topk_group", self.ngroup)
        self.rsf = cfg.get("routed_scaling_factor", 1.0)
        self.kdense = cfg.get("first_k_dense_replace", 0)
        self.rot = int(self.d * cfg.get("partial_rotary_factor", 1.0))
        self.theta = cfg.get("rope_theta", 10000.0)
        p = "model.layers."
        self.emb = cv(W["model.word_embeddings.weight"])
        self.norm = W["model.norm.weight"].float()
        self.lm = W["lm_head.weight"].float()  # lm_head in FP32 (spec §7)
        self.layers = []
        for l in range(self.L):
            q = p + str(l) + "."
            ly = {
                "softmax": (l + 1) % self.G == 0 or l >= (self.L // self.G) * self.G,
                "in": W[q + "input_layernorm.weight"].float(),
                "post": W[q + "post_attention_layernorm.weight"].float(),
                "qkv": cv(W[q + "attention.query_key_value.weight"]),
                "qn": W[q + "attention.query_layernorm.weight"].float(),
                "kn": W[q + "attention.key_layernorm.weight"].float(),
                "dense": cv(W[q + "attention.dense.weight"]),
            }
            if not ly["softmax"]:
                ly["g"] = cv(W[q + "attention.g_proj.weight"])
                ly["gn"] = W[q + "attention.g_norm.weight"].float()
                ly["slope"] = self.slopes(l, convention)
            if l < self.kdense:
                ly["ffn"] = (cv(W[q + "mlp.gate_proj.weight"]), cv(W[q + "mlp.up_proj.weight"]), cv(W[q + "mlp.down_proj.weight"]))
            else:
                ly["router"] = W[q + "mlp.gate.weight"].float()
                ly["bias"] = W[q + "mlp.gate.expert_bias"].float() if q + "mlp.gate.expert_bias" in W else None
                ex = q + "mlp.experts."
                ly["eg"] = cv(torch.stack([W.pop(ex + f"{e}.gate_proj.weight") for e in range(self.E)]))
                ly["eu"] = cv(torch.stack([W.pop(ex + f"{e}.up_proj.weight") for e in range(self.E)]))
                ly["ed"] = cv(torch.stack([W.pop(ex + f"{e}.down_proj.weight") for e in range(self.E)]))
                sh = q + "mlp.shared_experts."
                ly["shared"] = (cv(W[sh + "gate_proj.weight"]), cv(W[sh + "up_proj.weight"]), cv(W[sh + "down_proj.weight"])) if sh + "gate_proj.weight" in W else None
            self.layers.append(ly)
        torch.cuda.empty_cache()
        inv = self.theta ** (-torch.arange(0, self.rot, 2, dtype=torch.float64, device=DEV) / self.rot)
        self.inv_freq = inv.float()

    def slopes(self, l, convention):
        H, L = self.H, self.L
        def pow2(n):
            start = 2 ** (-(2 ** -(math.log2(n) - 3)))
            return [start ** (i + 1) for i in range(n)]
        if math.log2(H).is_integer():
            base = pow2(H)
        else:
            p = 2 ** math.floor(math.log2(H))
            base = pow2(p) + pow2(2 * p)[0::2][: H - p]
        if L <= 1:
            f = 1 + 1e-5
        elif convention == "hf":
            f = 1 - (l - 1) / (L - 1) + 1e-5
        elif convention == "mlx":
            f = 1 - max(0, l - 1) / max(1, L - 1) + 1e-5
        else:
            f = 1 - l / (L - 1) + 1e-5
        return torch.tensor([b * f for b in base], dtype=torch.float32, device=DEV)

    # -- pieces --
    def rms(self, x, w):
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def rope(self, x, pos):  # x [T, h, d] float32, pos [T]
        ang = pos.float()[:, None] * self.inv_freq[None, :]  # [T, r/2]
        cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
        h = self.rot // 2
        a, b = x[..., :h], x[..., h:self.rot]
        out = x.clone()
        out[..., :h] = a * cos - b * sin
        out[..., h:self.rot] = b * cos + a * sin
        return out

    def mm(self, x, w):  # BF16 product (FP32 in --fp32 mode)
        return x.to(self.dt) @ w.t()

    def swiglu(self, x, g, u, dn):
        return self.mm(F.silu(self.mm(x, g).float()) * self.mm(x, u).float(), dn).float()

    def moe(self, ly, x):  # x [T, D] float32
        T = x.shape[0]
        logits = x @ ly["router"].t()
        p = torch.sigmoid(logits)
        c = p + ly["bias"] if ly["bias"] is not None else p
        if self.ngroup > 1:
            cg = c.view(T, self.ngroup, -1)
            gs = cg.topk(2, dim=-1).values.sum(-1)
            keep = gs.topk(self.topkg, dim=-1).indices
            mask = torch.zeros_like(gs, dtype=torch.bool).scatter_(1, keep, True)
            c = cg.masked_fill(~mask[..., None], float("-inf")).view(T, -1)
        ids = c.topk(self.topk, dim=-1).indices  # [T, k]
        w = p.gather(1, ids)
        w = w / (w.sum(-1, keepdim=True) + 1e-20) * self.rsf
        out = torch.zeros_like(x)
        flat = ids.reshape(-1)
        order = torch.argsort(flat)
        counts = torch.bincount(flat, minlength=self.E).tolist()
        xb = x.to(self.dt)
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            sl = order[start:start + n]
            start += n
            rows = sl // self.topk
            xe = xb.index_select(0, rows)
            h = F.silu((xe @ ly["eg"][e].t()).float()) * (xe @ ly["eu"][e].t()).float()
            y = (h.to(self.dt) @ ly["ed"][e].t()).float() * w.view(-1)[sl][:, None]
            out.index_add_(0, rows, y)
        if ly["shared"] is not None:
            out += self.swiglu(x, *ly["shared"])
        return out

    def lightning(self, q, k, v, S, slope, C=64):
        """q, k, v [T, H, d] float32 (q already scaled); S [H, d, d] float32 updated in place."""
        T, H, d = q.shape
        if T <= 16:  # recurrence
            lam = torch.exp(-slope)[:, None, None]
            outs = []
            for t in range(T):
                S.mul_(lam).add_(k[t][:, :, None] * v[t][:, None, :])
                outs.append(torch.einsum("hi,hij->hj", q[t], S))
            return torch.stack(outs)
        n = (T + C - 1) // C
        pad = n * C - T
        if pad:
            z = q.new_zeros(pad, H, d)
            q, k, v = torch.cat([q, z]), torch.cat([k, z]), torch.cat([v, z])
        qc = q.view(n, C, H, d).permute(0, 2, 1, 3)  # [n, H, C, d]
        kc = k.view(n, C, H, d).permute(0, 2, 1, 3)
        vc = v.view(n, C, H, d).permute(0, 2, 1, 3)
        i = torch.arange(C, device=DEV, dtype=torch.float32)
        diff = i[:, None] - i[None, :]
        dec = torch.exp(-slope[:, None, None] * diff.clamp(min=0)) * (diff >= 0)  # [H, C, C]
        A = (qc @ kc.transpose(-1, -2)) * dec  # [n, H, C, C]
        O = A @ vc
        # state per chunk (the last chunk may be partial: its padded rows are zero)
        lens = [C] * n
        lens[-1] = C - pad
        kv_w = torch.exp(-slope[:, None] * (C - 1 - i)[None, :])  # [H, C]
        KV = (kc * kv_w[None, :, :, None]).transpose(-1, -2) @ vc  # [n, H, d, d]
        if pad:  # the partial chunk decays by its own length
            wl = torch.exp(-slope[:, None] * (lens[-1] - 1 - i)[None, :]) * (i < lens[-1])
            KV[-1] = (kc[-1] * wl[:, :, None]).transpose(-1, -2) @ vc[-1]
        lamC = torch.exp(-slope * C)[:, None, None]
        Sprev = []
        for ci in range(n):
            Sprev.append(S.clone())
            lc = lamC if lens[ci] == C else torch.exp(-slope * lens[ci])[:, None, None]
            S.mul_(lc).add_(KV[ci])
        Sp = torch.stack(Sprev)  # [n, H, d, d]
        qdec = torch.exp(-slope[:, None] * (i + 1)[None, :])  # [H, C]
        O = O + (qc * qdec[None, :, :, None]) @ Sp
        return O.permute(0, 2, 1, 3).reshape(n * C, H, d)[:T]

    def forward(self, ids, st, logits_all=False):
        """ids [B, T] (B sequences of T new tokens each), st: state dict; returns logits."""
        B, T = ids.shape
        pos0 = st["pos"]
        x = self.emb[ids.reshape(-1)].float()  # [B*T, D]
        pos = torch.arange(pos0, pos0 + T, device=DEV)
        H, Hkv, d = self.H, self.Hkv, self.d
        scale = 1.0 / math.sqrt(d)
        li = si = 0
        for l, ly in enumerate(self.layers):
            u = self.rms(x, ly["in"])
            qkv = self.mm(u, ly["qkv"]).float()
            if ly["softmax"]:
                q = qkv[:, : H * d].view(B * T, H, d)
                k = qkv[:, H * d:(H + Hkv) * d].view(B * T, Hkv, d)
                v = qkv[:, (H + Hkv) * d:].view(B, T, Hkv, d)
                q = self.rope(self.rms(q, ly["qn"]), pos.repeat(B)).view(B, T, H, d)
                k = self.rope(self.rms(k, ly["kn"]), pos.repeat(B)).view(B, T, Hkv, d)
                Kc, Vc = st["k"][si], st["v"][si]  # [B, Hkv, maxL, d] bf16
                Kc[:, :, pos0:pos0 + T] = k.transpose(1, 2).to(self.dt)
                Vc[:, :, pos0:pos0 + T] = v.transpose(1, 2).to(self.dt)
                qh = q.transpose(1, 2).to(self.dt)  # [B, H, T, d]
                # GQA: repeat the KV heads (keeps SDPA on its flash kernel)
                kh = Kc[:, :, : pos0 + T].repeat_interleave(H // Hkv, dim=1)
                vh = Vc[:, :, : pos0 + T].repeat_interleave(H // Hkv, dim=1)
                if T == 1:
                    o = F.scaled_dot_product_attention(qh, kh, vh)
                elif pos0 == 0:
                    o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True)
                else:
                    L = pos0 + T
                    msk = torch.arange(L, device=DEV)[None, :] <= (pos0 + torch.arange(T, device=DEV))[:, None]
                    o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=msk)
                o = o.transpose(1, 2).reshape(B * T, H * d)
                si += 1
            else:
                qkv = qkv.view(B * T, 3, H, d)
                q = self.rope(self.rms(qkv[:, 0], ly["qn"]), pos.repeat(B)) * scale
                k = self.rope(self.rms(qkv[:, 1], ly["kn"]), pos.repeat(B))
                v = qkv[:, 2]
                q, k, v = q.view(B, T, H, d), k.view(B, T, H, d), v.view(B, T, H, d)
                if T == 1:  # batched recurrence step
                    S = st["lin"][li]  # [B, H, d, d]
                    lam = torch.exp(-ly["slope"])[None, :, None, None]
                    S.mul_(lam).add_(k[:, 0, :, :, None] * v[:, 0, :, None, :])
                    o = torch.einsum("bhi,bhij->bhj", q[:, 0], S).reshape(B, H * d)
                else:
                    o = torch.cat([self.lightning(q[b], k[b], v[b], st["lin"][li][b], ly["slope"]).reshape(T, H * d) for b in range(B)])
                g = self.mm(u, ly["g"]).float()
                og = o.view(B * T, self.Gn, -1)
                og = og * torch.rsqrt(og.pow(2).mean(-1, keepdim=True) + self.eps)
                o = og.view(B * T, H * d) * ly["gn"] * torch.sigmoid(g)
                li += 1
            x = x + self.mm(o.float(), ly["dense"]).float()
            h = self.rms(x, ly["post"])
            x = x + (self.swiglu(h, *ly["ffn"]) if "ffn" in ly else self.moe(ly, h))
        st["pos"] += T
        y = self.rms(x.view(B, T, -1) if logits_all else x.view(B, T, -1)[:, -1], self.norm)
        return y @ self.lm.t()

    def new_state(self, B, maxL, ctx=0, seed=0):
        nl = sum(1 for ly in self.layers if not ly["softmax"])
        ns = sum(1 for ly in self.layers if ly["softmax"])
        g = torch.Generator(device=DEV).manual_seed(seed)
        st = {"pos": ctx,
              "lin": [torch.zeros(B, self.H, self.d, self.d, device=DEV) for _ in range(nl)],
              "k": [torch.zeros(B, self.Hkv, maxL, self.d, device=DEV, dtype=self.dt) for _ in range(ns)],
              "v": [torch.zeros(B, self.Hkv, maxL, self.d, device=DEV, dtype=self.dt) for _ in range(ns)]}
        if ctx > 0:  # synthesized context, like `ringo bench --context`
            for s in st["lin"]:
                s.uniform_(-0.1, 0.1, generator=g)
            for t in st["k"] + st["v"]:
                t[:, :, :ctx].uniform_(-1, 1, generator=g)
        return st


def save_logits(path, t):
    t = t.float().contiguous().cpu()
    hdr = json.dumps({"prompt_logits": {"dtype": "F32", "shape": list(t.shape), "data_offsets": [0, t.numel() * 4]}}).encode()
    hdr += b" " * (-len(hdr) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        f.write(t.numpy().tobytes() if hasattr(t, "numpy") else bytes(t.untyped_storage()))


def timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    r = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prefill", default="4096,32768")
    ap.add_argument("--decode", default="1,64")
    ap.add_argument("--context", default="1024")
    ap.add_argument("--gen", type=int, default=16)
    ap.add_argument("--logits-ids", default="")
    ap.add_argument("--compare", default="", help="ringo logits safetensors files (prompt_logits), comma-separated, to compare with")
    ap.add_argument("--decay-convention", default="sglang")
    ap.add_argument("--fp32", action="store_true", help="FP32 weights and products (no TF32): a check of the implementation, not a benchmark")
    ap.add_argument("--save-logits", default="", help="write the --logits-ids logits here (safetensors, prompt_logits)")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    res = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "errors": []}
    t0 = time.perf_counter()
    cfg, W = load_model(a.model)
    m = Model(cfg, W, a.decay_convention, torch.float32 if a.fp32 else torch.bfloat16)
    res["dtype"] = "fp32" if a.fp32 else "bf16"
    del W
    torch.cuda.empty_cache()
    res["load_s"] = time.perf_counter() - t0
    V = cfg["vocab_size"]
    gen = torch.Generator(device=DEV).manual_seed(1)
    with torch.inference_mode():
        if a.logits_ids:
            try:
                ids = torch.tensor([[int(x) for x in a.logits_ids.split(",")]], device=DEV)
                st = m.new_state(1, ids.shape[1] + 8)
                lg = m.forward(ids, st, logits_all=True)[0]  # [T, V]
                res["logits_T"] = ids.shape[1]
                if a.save_logits:
                    save_logits(a.save_logits, lg)
                res["compare"] = []
                for fn in [x for x in a.compare.split(",") if x]:
                    try:
                        r = read_safetensors(fn)["prompt_logits"].float().to(DEV).reshape(-1, lg.shape[-1])
                        n = min(r.shape[0], lg.shape[0])
                        r2, l2 = r[:n], lg[:n]
                        top_agree = (r2.argmax(-1) == l2.argmax(-1)).float().mean().item()
                        rel = ((r2 - l2).abs().amax(-1) / l2.abs().amax(-1)).amax().item()
                        res["compare"].append({"file": fn, "rows": n, "top1_agreement": top_agree, "max_row_rel_err": rel})
                    except Exception:
                        res["errors"].append(f"compare {fn}: " + traceback.format_exc())
            except Exception:
                res["errors"].append("logits: " + traceback.format_exc())
        # warm-up
        try:
            m.forward(torch.randint(0, V, (1, 64), device=DEV, generator=gen), m.new_state(1, 128))
        except Exception:
            res["errors"].append("warmup: " + traceback.format_exc())
        res["prefill"] = []
        for T in [int(x) for x in a.prefill.split(",") if x]:
            try:
                ids = torch.randint(0, V, (1, T), device=DEV, generator=gen)
                st = m.new_state(1, T + 8)
                el, _ = timed(lambda: m.forward(ids, st))
                res["prefill"].append({"tokens": T, "seconds": el, "tok_s": T / el})
                del st
                torch.cuda.empty_cache()
            except Exception:
                res["errors"].append(f"prefill {T}: " + traceback.format_exc())
            print(json.dumps(res["prefill"][-1:]), file=sys.stderr, flush=True)
        res["decode"] = []
        for B in [int(x) for x in a.decode.split(",") if x]:
            for ctx in [int(x) for x in a.context.split(",") if x]:
                try:
                    st = m.new_state(B, ctx + a.gen + 2, ctx=ctx, seed=B)
                    ids = torch.randint(0, V, (B, 1), device=DEV, generator=gen)
                    m.forward(ids, st)  # untimed step

                    def steps():
                        nonlocal ids
                        for _ in range(a.gen):
                            ids = torch.randint(0, V, (B, 1), device=DEV, generator=gen)
                            m.forward(ids, st)
                    el, _ = timed(steps)
                    res["decode"].append({"batch": B, "context": ctx, "tok_s": B * a.gen / el, "ms_per_step": el / a.gen * 1e3})
                    del st
                    torch.cuda.empty_cache()
                except Exception:
                    res["errors"].append(f"decode B={B} ctx={ctx}: " + traceback.format_exc())
                print(json.dumps(res["decode"][-1:]), file=sys.stderr, flush=True)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
