package cuda

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/model/bailing"
	"github.com/ringo-ai/ringo/quant"
	"github.com/ringo-ai/ringo/safetensors"
)

// benchConfig is a synthetic Ring-linear-like model (~0.9 GB of BF16):
// 8 layers (6 lightning, 2 softmax), 64 experts (top 8) + 1 shared.
const benchConfig = `{
  "architectures": ["BailingMoeLinearV2ForCausalLM"], "model_type": "bailing_moe_linear",
  "vocab_size": 32768, "hidden_size": 1024, "num_hidden_layers": 8,
  "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 128,
  "intermediate_size": 2816, "moe_intermediate_size": 256, "moe_shared_expert_intermediate_size": 256,
  "num_experts": 64, "num_experts_per_tok": 8, "num_shared_experts": 1, "n_group": 8, "topk_group": 4,
  "norm_topk_prob": true, "routed_scaling_factor": 2.5, "score_function": "sigmoid",
  "moe_router_enable_expert_bias": true, "first_k_dense_replace": 1, "layer_group_size": 4,
  "group_norm_size": 4, "linear_silu": false, "use_qk_norm": true, "partial_rotary_factor": 0.5,
  "rope_theta": 600000.0, "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "hidden_act": "silu",
  "tie_word_embeddings": false, "eos_token_id": 1, "torch_dtype": "bfloat16"
}`

var (
	benchDirOnce sync.Once
	benchDir     string
	benchDirErr  error
	benchModels  sync.Map // precise bool -> *bailing.Model
)

// syntheticCheckpoint writes (once per machine) a random checkpoint with the
// tensor names and shapes model/bailing expects.
func syntheticCheckpoint() (string, error) {
	benchDirOnce.Do(func() {
		benchDir = filepath.Join(os.TempDir(), "ringo-cuda-bench-v1")
		if _, err := os.Stat(filepath.Join(benchDir, "config.json")); err == nil {
			return
		}
		benchDirErr = writeSynthetic(benchDir)
	})
	return benchDir, benchDirErr
}

func writeSynthetic(dir string) error {
	cfg, err := bailing.ParseConfig([]byte(benchConfig))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	D, V, H, Hkv, d := cfg.HiddenSize, cfg.VocabSize, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim
	var infos []safetensors.TensorInfo
	add := func(name string, dt safetensors.DType, shape ...int) {
		infos = append(infos, safetensors.TensorInfo{Name: name, DType: dt, Shape: shape})
	}
	bf := safetensors.BF16
	add("model.word_embeddings.weight", bf, V, D)
	add("model.norm.weight", bf, D)
	add("lm_head.weight", bf, V, D)
	for i := 0; i < cfg.NumHiddenLayers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		add(p+"input_layernorm.weight", bf, D)
		add(p+"post_attention_layernorm.weight", bf, D)
		if cfg.IsLinearLayer(i) {
			add(p+"attention.query_key_value.weight", bf, 3*H*d, D)
			add(p+"attention.g_proj.weight", bf, H*d, D)
			add(p+"attention.g_norm.weight", bf, H*d)
		} else {
			add(p+"attention.query_key_value.weight", bf, (H+2*Hkv)*d, D)
		}
		add(p+"attention.query_layernorm.weight", bf, d)
		add(p+"attention.key_layernorm.weight", bf, d)
		add(p+"attention.dense.weight", bf, D, H*d)
		if i < cfg.FirstKDenseReplace {
			I := cfg.IntermediateSize
			add(p+"mlp.gate_proj.weight", bf, I, D)
			add(p+"mlp.up_proj.weight", bf, I, D)
			add(p+"mlp.down_proj.weight", bf, D, I)
			continue
		}
		E, I, SI := cfg.NumExperts, cfg.MoeIntermediateSize, cfg.SharedIntermediate()
		add(p+"mlp.gate.weight", bf, E, D)
		add(p+"mlp.gate.expert_bias", safetensors.F32, E)
		for e := 0; e < E; e++ {
			q := fmt.Sprintf("%smlp.experts.%d.", p, e)
			add(q+"gate_proj.weight", bf, I, D)
			add(q+"up_proj.weight", bf, I, D)
			add(q+"down_proj.weight", bf, D, I)
		}
		add(p+"mlp.shared_experts.gate_proj.weight", bf, SI, D)
		add(p+"mlp.shared_experts.up_proj.weight", bf, SI, D)
		add(p+"mlp.shared_experts.down_proj.weight", bf, D, SI)
	}
	w, err := safetensors.Create(filepath.Join(dir, "model.safetensors"), infos, map[string]string{"format": "pt"})
	if err != nil {
		return err
	}
	state := uint64(0x9e3779b97f4a7c15)
	buf := make([]byte, 1<<20)
	for _, ti := range infos {
		n := int(ti.Bytes())
		switch {
		case ti.DType == safetensors.F32: // expert bias: zeros
			clear(buf)
		case len(ti.Shape) == 1: // norms: ones
			for i := 0; i+1 < len(buf); i += 2 {
				binary.LittleEndian.PutUint16(buf[i:], 0x3f80)
			}
		}
		scale := float32(1 / math.Sqrt(float64(ti.Shape[len(ti.Shape)-1])))
		for n > 0 {
			k := min(n, len(buf))
			if ti.DType != safetensors.F32 && len(ti.Shape) == 2 {
				for i := 0; i+1 < k; i += 2 {
					state ^= state << 13
					state ^= state >> 7
					state ^= state << 17
					f := (float32(state>>40)/float32(1<<24)*2 - 1) * scale * 1.7
					binary.LittleEndian.PutUint16(buf[i:], quant.F32ToBF16(f))
				}
			}
			if _, err := w.Write(buf[:k]); err != nil {
				w.Close()
				return err
			}
			n -= k
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), []byte(benchConfig), 0o644)
}

func benchModel(b *testing.B, precise bool) *bailing.Model {
	g := gpu(b, precise)
	if m, ok := benchModels.Load(precise); ok {
		return m.(*bailing.Model)
	}
	dir, err := syntheticCheckpoint()
	if err != nil {
		b.Fatal(err)
	}
	ck, err := checkpoint.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	m, err := bailing.Load(ck.ConfigJSON, ck.Generation, ck, g, bailing.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("loaded synthetic model (%s) in %v", g.Describe(), time.Since(t0))
	benchModels.Store(precise, m)
	return m
}

func prompt(n int, seed int32) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = (seed*7919 + int32(i)*104729) % 32768
		if out[i] < 2 {
			out[i] += 2
		}
	}
	return out
}

func modeName(precise bool) string {
	if precise {
		return "precise"
	}
	return "fast"
}

// BenchmarkDecode measures single-sequence and batched decode steps after a
// 256-token prompt.
func BenchmarkDecode(b *testing.B) {
	for _, precise := range []bool{false, true} {
		for _, batch := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/batch=%d", modeName(precise), batch), func(b *testing.B) {
				m := benchModel(b, precise)
				var reqs []*model.Request
				for i := 0; i < batch; i++ {
					st := m.NewState()
					defer st.Free()
					reqs = append(reqs, &model.Request{State: st, Tokens: prompt(256, int32(i))})
				}
				if err := m.Forward(context.Background(), reqs); err != nil {
					b.Fatal(err)
				}
				g := gpu(b, precise)
				s0 := g.Stats()
				b.ResetTimer()
				for it := 0; it < b.N; it++ {
					for i, r := range reqs {
						r.Tokens = []int32{argmax(r.Logits) + int32(i)%2}
					}
					if err := m.Forward(context.Background(), reqs); err != nil {
						b.Fatal(err)
					}
				}
				el := b.Elapsed().Seconds()
				s1 := g.Stats()
				b.ReportMetric(float64(b.N*batch)/el, "tok/s")
				b.ReportMetric(el/float64(b.N)*1e3, "ms/step")
				b.ReportMetric(float64(s1.Kernels-s0.Kernels)/float64(b.N), "kernels/step")
				b.ReportMetric(float64(s1.DriverCalls-s0.DriverCalls)/float64(b.N), "calls/step")
				b.ReportMetric(float64(s1.GraphLaunches-s0.GraphLaunches)/float64(b.N), "graphs/step")
			})
		}
	}
}

// BenchmarkPrefill measures a fresh prompt of 512 tokens (one pass).
func BenchmarkPrefill(b *testing.B) {
	for _, precise := range []bool{false, true} {
		for _, n := range []int{512, 2048} {
			b.Run(fmt.Sprintf("%s/tokens=%d", modeName(precise), n), func(b *testing.B) {
				m := benchModel(b, precise)
				toks := prompt(n, 3)
				b.ResetTimer()
				for it := 0; it < b.N; it++ {
					st := m.NewState()
					req := &model.Request{State: st, Tokens: toks}
					if err := m.Forward(context.Background(), []*model.Request{req}); err != nil {
						b.Fatal(err)
					}
					st.Free()
				}
				b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "tok/s")
			})
		}
	}
}

// timeCalls runs f once, then b.N times, and returns the seconds per call
// (the GPU's work included).
func timeCalls(b *testing.B, g *Backend, f func()) float64 {
	f()
	g.Sync()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f()
	}
	g.Sync()
	return b.Elapsed().Seconds() / float64(b.N)
}

// randGPUExperts uploads E random BF16 experts (intermediate size I, hidden D).
func randGPUExperts(tb testing.TB, g *Backend, rng *rand.Rand, E, I, D int) backend.Experts {
	var gate, up, down []backend.HostWeight
	for e := 0; e < E; e++ {
		gate = append(gate, hostWeight(rng, "gate", backend.BF16, I, D, 0.03))
		up = append(up, hostWeight(rng, "up", backend.BF16, I, D, 0.03))
		down = append(down, hostWeight(rng, "down", backend.BF16, D, I, 0.03))
	}
	ex, err := g.UploadExperts(gate, up, down)
	if err != nil {
		tb.Fatal(err)
	}
	return ex
}

// BenchmarkOps times single operations at decode and prefill sizes of the
// synthetic model (µs per call, including launch overhead).
func BenchmarkOps(b *testing.B) {
	g := gpu(b, false)
	rng := rand.New(rand.NewSource(1))
	D, Hd, d, E, I := 1024, 1024, 128, 64, 256
	wqkv, err := g.Upload(hostWeight(rng, "qkv", backend.BF16, 3*Hd, D, 0.03))
	if err != nil {
		b.Fatal(err)
	}
	ex := randGPUExperts(b, g, rng, E, I, D)
	run := func(name string, f func()) {
		b.Run(name, func(b *testing.B) {
			b.ReportMetric(timeCalls(b, g, f)*1e6, "µs/call")
		})
	}
	for _, T := range []int{1, 512} {
		x, y := g.Alloc(T, D), g.Alloc(T, 3*Hd)
		run(fmt.Sprintf("Add/T=%d", T), func() { g.Add(x, x, x) })
		run(fmt.Sprintf("MatMul3072x1024/T=%d", T), func() { g.MatMul(y, x, wqkv) })
		logits := g.Alloc(T, E)
		vals := make([]float32, T*E)
		for i := range vals {
			vals[i] = rng.Float32()
		}
		g.Write(logits, vals)
		p := backend.RouteParams{TopK: 8, Groups: 8, TopKGroups: 4, Sigmoid: true, Normalize: true, Scale: 2.5}
		rt := g.Route(logits, nil, p)
		run(fmt.Sprintf("Route/T=%d", T), func() { g.Route(logits, nil, p) })
		run(fmt.Sprintf("MoE64x8/T=%d", T), func() { g.MoE(x, x, rt, ex) })
		q := y.ColRange(0, Hd)
		st := g.Alloc(Hd, d)
		decay := []float32{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8}
		o := g.Alloc(T, Hd)
		run(fmt.Sprintf("Lightning/T=%d", T), func() {
			g.Lightning(o, q, y.ColRange(Hd, Hd), y.ColRange(2*Hd, Hd), []backend.Span{{Row: 0, N: T}}, []backend.Tensor{st}, decay, 0.088)
		})
		kv := backend.KV{K: g.Alloc(4096, 2*d), V: g.Alloc(4096, 2*d)}
		run(fmt.Sprintf("Attention(pos 2048)/T=%d", T), func() {
			g.Attention(o, q, y.ColRange(Hd, 2*d), y.ColRange(2*Hd, 2*d), []backend.Span{{Row: 0, N: T, Pos: 2048}}, []backend.KV{kv}, d, 0.088)
		})
	}
}

// BenchmarkDecodeAB alternates decode settings step by step, in one process,
// on the checkpoint in RINGO_BENCH_MODEL (skipped without it; e.g. a
// synthetic Ring-mini-linear-2.0 from `ringo synth`) after a 512-token
// prompt, and logs each setting's mean step time. RINGO_BENCH_AB lists the
// settings, ';'-separated, each a ','-separated list of knob=value (the
// knobs below; a knob not named keeps the backend's default, an empty
// setting is the defaults), for example "dcpre=0;;rp=0". The settings of
// earlier sessions, '/'-separated values of the first eight knobs in order
// ("1/1/1/0/1"), are read too; there 0 for dc and 1 for seg keep the
// default.
//
//   - rope: the QK norm and RoPE inside k_lightning_rec (RINGO_CUDA_FUSE), 0 or 1
//   - rec: that kernel's state loads before PDL_ENTER (RINGO_CUDA_REC_EARLY), 0 or 1
//   - gu: moe_gu's shared-expert blocks before it (RINGO_CUDA_GU_EARLY), 0 or 1
//   - dc: the warps per output row of moe_dc (RINGO_CUDA_DC_SPLIT), 1 to 3
//   - nr: k_norm_route (RINGO_CUDA_NORM_ROUTE), 0 or 1
//   - seg: decode steps in segments (RINGO_CUDA_SEG): 0 for one graph per
//     step, F-R for the first after F kernels and then every R
//   - gemv2: the fewest output rows of the single-row GEMVs that run two
//     rows per warp (RINGO_CUDA_GEMV2), 0 for none
//   - rp: Read through pinned memory (RINGO_CUDA_READ_PINNED), 0 or 1
//   - dcpre: moe_dc's L2 requests before its wait (RINGO_CUDA_DC_PRE), 0 or 1
//   - ng: each layer's input norm in its first GEMV (RINGO_CUDA_NORM_GEMV), 0 or 1
//   - wr: routing by warps (RINGO_CUDA_WARP_ROUTE), 0 or 1
//   - dr: moe_dc's first chunks in registers before its wait
//     (RINGO_CUDA_DC_REG), 0 or 1
//   - g4: the fewest output rows of the normed single-row GEMVs that run four
//     rows per warp (RINGO_CUDA_GEMV4N), 0 for none
//   - rg: the lightning gate norm inside the recurrence (RINGO_CUDA_REC_GATE), 0 or 1
//   - ru: the routing by warps compiled for eight experts per row (RINGO_CUDA_ROUTE_UNROLL), 0 or 1
//   - gd: the one-row MoE as one kernel, moe_gd_bf16v (RINGO_CUDA_MOE_FUSED), 0 or 1
//   - gs: when moe_gd stages its routed down rows (RINGO_CUDA_GD_STAGE), 0 to 4
//   - gsp: moe_gd's shared pairs spread, their rows staged before the wait
//     (RINGO_CUDA_GD_SPRE), 0 or 1
//   - gf: moe_gd's grid barrier as one release add per block (RINGO_CUDA_GD_FLIP), 0 or 1
//   - gna: moe_gd's routed rows loaded past L1 (RINGO_CUDA_GD_NA), 0 or 1
//   - na: the other GEMVs' weights loaded past L1 (RINGO_CUDA_LDNA), 0 or 1
//   - gp: moe_gd's pairs pipelined (RINGO_CUDA_GD_PIPE), 0 or 1
//   - rd: a step's logits read straight into Go memory (RINGO_CUDA_READ_DIRECT), 0 or 1
//   - acs: split decode attention merged by k_attn_combine_seq (RINGO_CUDA_ATTN_COMBINE_SEQ), 0 or 1
//   - rl: k_lightning_recg's v and gate loaded with q and k (RINGO_CUDA_REC_LOADS), 0 or 1
//   - rgb: k_lightning_recg (1) or k_lightning_recg2 (2, two blocks per SM), 0
//     to choose by how many clusters fit (RINGO_CUDA_REC_MINB)
//   - f8t: gemv_fp8t8 (bulk copies into shared memory), the default, or gemv_fp8v8 (RINGO_CUDA_FP8_TMA), 1 or 0
//   - dcm: moe_dcmmat (tensor cores), the default, or moe_dcl2_fp8 for the
//     FP8 down projections (RINGO_CUDA_DC_MMA), 1 or 0
//   - dcw: moe_dcmmatw (rounds of 512 columns), the default, or moe_dcmmat
//     (RINGO_CUDA_DC_WIDE), 1 or 0
//   - gum: moe_gummat9w (one token's FP8 gate|up pairs on tensor cores), the
//     default where its grid fills the GPU, or moe_gu2_fp8 (RINGO_CUDA_GU_MMA), 1 or 0
//   - b16t: gemv_bf16t4n (bulk copies), the default, or gemv_bf16v4n (RINGO_CUDA_BF16_TMA), 1 or 0
//   - gv: moe_gd_bf16v's variant (RINGO_CUDA_GD_VAR): 0 for the default, u4
//     for the kernel before the twenty-fourth session, s2 for rounds of two
//     chunks, any for the knobs as arguments (to vary gs, gsp, gf, gna, gp
//     against the default kernel's code)
//   - rt: decode's RoPE angles from the host's table (RINGO_CUDA_ROPE_TABLE), 0 or 1
//   - np: an RMSNorm of one row into another tensor run by the GEMV after it
//     (RINGO_CUDA_NORM_PLAIN), 0 or 1
//   - f8r: rows per warp of the single-row FP8 GEMVs (RINGO_CUDA_FP8_ROWS), 1, 2, 4 or 8
//   - gu2: FP8 experts' gate|up pairs per warp (RINGO_CUDA_GU_PAIRS), 1, 2 or 4
//   - dcl: rows per warp of the FP8 experts' down projections by moe_dcl*_fp8
//     (RINGO_CUDA_DCL), 1, 2 or 4; 0 for moe_dc_fp8
//   - f84: the fewest rows of a one-row FP8 GEMV with four rows per warp, fewer take two
//     (RINGO_CUDA_FP8_ROWS4_MIN), 0 for none
//   - t8l: gemv_fp8t8's refills asked for after each round's sums, the
//     default, or as each round is taken, gemv_fp8t8e (RINGO_CUDA_T8_LATE), 1 or 0
//
// The default list is "rope=1;rope=0". Separate processes on the GPU
// machine differ by a few per cent; alternating steps resolves less than
// that.
func BenchmarkDecodeAB(b *testing.B) {
	dir := os.Getenv("RINGO_BENCH_MODEL")
	if dir == "" {
		b.Skip("RINGO_BENCH_MODEL not set")
	}
	spec := os.Getenv("RINGO_BENCH_AB")
	if spec == "" {
		spec = "rope=1;rope=0"
	}
	g := gpu(b, false)
	knobs := decodeKnobs(g)
	settings, err := parseDecodeSettings(spec, knobs)
	if err != nil {
		b.Fatal(err)
	}
	ck, err := checkpoint.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer ck.Close()
	m, err := bailing.Load(ck.ConfigJSON, ck.Generation, ck, g, bailing.Options{})
	if err != nil {
		b.Fatal(err)
	}
	st := m.NewState()
	defer st.Free()
	r := &model.Request{State: st, Tokens: prompt(512, 1)}
	if err := m.Forward(context.Background(), []*model.Request{r}); err != nil {
		b.Fatal(err)
	}
	defer func() {
		for _, k := range knobs {
			k.restore()
		}
	}()
	step := func(s decodeSetting) time.Duration {
		for _, k := range knobs {
			k.restore()
		}
		for _, f := range s.set {
			f()
		}
		r.Tokens = []int32{argmax(r.Logits)}
		t0 := time.Now()
		if err := m.Forward(context.Background(), []*model.Request{r}); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	for _, s := range settings { // graphs captured
		step(s)
		step(s)
	}
	sum := make([]time.Duration, len(settings))
	n := make([]int, len(settings))
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		k := it % len(settings)
		sum[k] += step(settings[k])
		n[k]++
	}
	for k, s := range settings {
		if n[k] > 0 {
			us := float64(sum[k].Microseconds()) / float64(n[k])
			b.Logf("%-12s %5d steps  %8.1f µs/step  %7.1f tok/s", s.name, n[k], us, 1e6/us)
		}
	}
}

// decodeSetting is one of BenchmarkDecodeAB's settings: its name and what
// sets its knobs after the defaults.
type decodeSetting struct {
	name string
	set  []func()
}

// parseDecodeSettings reads RINGO_BENCH_AB (see BenchmarkDecodeAB) against
// knobs.
func parseDecodeSettings(spec string, knobs map[string]decodeKnob) ([]decodeSetting, error) {
	var settings []decodeSetting
	for _, s := range strings.Split(spec, ";") {
		st := decodeSetting{name: s}
		if s == "" {
			st.name = "(defaults)"
		}
		pairs := strings.Split(s, ",")
		if s != "" && !strings.Contains(s, "=") { // the positional form
			f := strings.Split(s, "/")
			if len(f) > 8 {
				return nil, fmt.Errorf("RINGO_BENCH_AB: %q has more than 8 fields", s)
			}
			pairs = pairs[:0]
			for i, v := range f {
				if name := knobOrder[i]; !(name == "dc" && v == "0" || name == "seg" && v == "1") {
					pairs = append(pairs, name+"="+v)
				}
			}
		}
		for _, kv := range pairs {
			if kv == "" {
				continue
			}
			name, v, _ := strings.Cut(kv, "=")
			k, ok := knobs[name]
			if !ok {
				return nil, fmt.Errorf("RINGO_BENCH_AB: unknown knob %q in %q (want one of %s)", name, s, strings.Join(knobOrder, ", "))
			}
			apply, err := k.parse(v)
			if err != nil {
				return nil, fmt.Errorf("RINGO_BENCH_AB: %s=%s: %v", name, v, err)
			}
			st.set = append(st.set, apply)
		}
		settings = append(settings, st)
	}
	return settings, nil
}

// knobOrder names BenchmarkDecodeAB's knobs, the positional ones first.
var knobOrder = []string{"rope", "rec", "gu", "dc", "nr", "seg", "gemv2", "rp", "dcpre", "ng", "wr", "g4", "dr", "rg", "ru", "gd", "gs", "gsp", "gf", "gna", "na", "gp", "rd", "f8r", "gu2", "dcl", "f84"}

// decodeKnob is one of BenchmarkDecodeAB's settings: parse checks a value
// and returns what sets it on the backend; restore puts back the value the
// backend had when decodeKnobs made it.
type decodeKnob struct {
	parse   func(v string) (func(), error)
	restore func()
}

// decodeKnobs returns BenchmarkDecodeAB's knobs for g, by name.
func decodeKnobs(g *Backend) map[string]decodeKnob {
	flag := func(p *bool, invert bool) decodeKnob {
		return decodeKnob{
			parse: func(v string) (func(), error) {
				if v != "0" && v != "1" {
					return nil, fmt.Errorf("want 0 or 1")
				}
				on := (v == "1") != invert
				return func() { *p = on }, nil
			},
		}
	}
	number := func(p *int, lo, hi int) decodeKnob {
		return decodeKnob{
			parse: func(v string) (func(), error) {
				n, err := strconv.Atoi(v)
				if err != nil || n < lo || n > hi {
					return nil, fmt.Errorf("want a number from %d to %d", lo, hi)
				}
				return func() { *p = n }, nil
			},
		}
	}
	// setNA writes the module's ld_na where it changes (a device call)
	setNA := func(on bool) {
		if on == g.ldNA {
			return
		}
		defer g.enter()()
		if err := g.setLdNA(on); err != nil {
			panic(err)
		}
	}
	k := map[string]decodeKnob{
		"rope":  flag(&g.fuseRope, false),
		"rec":   flag(&g.recLate, true),
		"rl":    flag(&g.recLoadsLate, true),
		"rgb":   number(&g.recMinB, 0, 2),
		"f8t":   flag(&g.fp8TMA, false),
		"b16t":  flag(&g.bf16TMA, false),
		"dcm":   flag(&g.dcMMA, false),
		"dcw":   flag(&g.dcWide, false),
		"gum":   flag(&g.guMMA, false),
		"q8":    number(&g.mmaE4M3, 0, 3),
		"ka":    flag(&g.attnBounds, false),
		"dc1":   flag(&g.dcOnePass, false),
		"nrp":   flag(&g.routePartials, false),
		"gvm":   flag(&g.gvMMA, false),
		"v3":    number(&g.fp8V3, 0, 2),
		"t9":    number(&g.fp8T9, 0, 2),
		"t8l":   flag(&g.fp8T8Late, false),
		"agm":   number(&g.attnGroupMin, 0, math.MaxInt32),
		"acs":   flag(&g.attnCombineSeq, false),
		"rt":    flag(&g.ropeTab, false),
		"np":    flag(&g.normPlain, false),
		"gu":    flag(&g.guEarly, false),
		"dc":    number(&g.dcSplit, 1, 3),
		"gemv2": number(&g.gemv2, 0, math.MaxInt32),
		"rp":    flag(&g.readPinned, false),
		"dcpre": flag(&g.dcPre, false),
		"ng":    flag(&g.normGEMV, false),
		"wr":    flag(&g.warpRoute, false),
		"g4":    number(&g.gemv4n, 0, math.MaxInt32),
		"dr":    flag(&g.dcReg, false),
		"rg":    flag(&g.recGate, false),
		"ru":    flag(&g.routeUnroll, false),
		"gd":    flag(&g.moeFused, false),
		"f84":   number(&g.fp8Rows4Min, 0, math.MaxInt32),
		"gs":    number(&g.gdStage, 0, 4),
		"gsp":   flag(&g.gdSharedPre, false),
		"gf":    flag(&g.gdFlip, false),
		"gna":   flag(&g.gdNA, false),
		"gp":    flag(&g.gdPipe, false),
		"rd":    flag(&g.readDirect, false),
		"na": {parse: func(v string) (func(), error) {
			if v != "0" && v != "1" {
				return nil, fmt.Errorf("want 0 or 1")
			}
			return func() { setNA(v == "1") }, nil
		}},
		"gv": {parse: func(v string) (func(), error) {
			if v == "0" {
				v = ""
			}
			if v != "" && !slices.Contains(gdVariants, v) {
				return nil, fmt.Errorf("want 0 or one of %v", gdVariants)
			}
			return func() { g.gdVar = v }, nil
		}},
		"seg": {parse: func(v string) (func(), error) {
			var f, r int
			if v == "0" {
				return func() { g.segFirst, g.segRest = 0, 0 }, nil
			}
			if n, err := fmt.Sscanf(v, "%d-%d", &f, &r); err != nil || n != 2 || f < 0 || r < 0 {
				return nil, fmt.Errorf("want 0 or F-R")
			}
			return func() { g.segFirst, g.segRest = f, r }, nil
		}},
	}
	rows := func(p *int, ok ...int) decodeKnob {
		return decodeKnob{parse: func(v string) (func(), error) {
			n, err := strconv.Atoi(v)
			if err != nil || !slices.Contains(ok, n) {
				return nil, fmt.Errorf("want one of %v", ok)
			}
			return func() { *p = n }, nil
		}}
	}
	k["f8r"], k["dcl"], k["gu2"] = rows(&g.fp8Rows, 1, 2, 4, 8), rows(&g.dclRows, 0, 1, 2, 4), rows(&g.guPairs, 1, 2, 4)
	nr := flag(&g.normRoute, false)
	k["nr"] = decodeKnob{parse: func(v string) (func(), error) {
		set, err := nr.parse(v)
		if err != nil {
			return nil, err
		}
		return func() {
			on := g.normRoute
			set()
			g.normRoute = g.normRoute && on // only where the backend has it
		}, nil
	}}
	// the backend's values now, which restore puts back
	fuseRope, recLate, guEarly, dcSplit, normRoute, ldNA := g.fuseRope, g.recLate, g.guEarly, g.dcSplit, g.normRoute, g.ldNA
	segFirst, segRest, gemv2, readPinned, dcPre, ng := g.segFirst, g.segRest, g.gemv2, g.readPinned, g.dcPre, g.normGEMV
	gv, acs, rl, rt, np, rgb, f8t, b16t, dcm := g.gdVar, g.attnCombineSeq, g.recLoadsLate, g.ropeTab, g.normPlain, g.recMinB, g.fp8TMA, g.bf16TMA, g.dcMMA
	dcw, gum, q8 := g.dcWide, g.guMMA, g.mmaE4M3
	ka, v3, t9, agm, dc1, t8l := g.attnBounds, g.fp8V3, g.fp8T9, g.attnGroupMin, g.dcOnePass, g.fp8T8Late
	nrp, gvm := g.routePartials, g.gvMMA
	f8r, gu2, dcl, f84 := g.fp8Rows, g.guPairs, g.dclRows, g.fp8Rows4Min
	wr, g4, dr, rg, ru, gd, gs, gsp, gf, gna, gp, rd := g.warpRoute, g.gemv4n, g.dcReg, g.recGate, g.routeUnroll, g.moeFused, g.gdStage, g.gdSharedPre, g.gdFlip, g.gdNA, g.gdPipe, g.readDirect
	restore := map[string]func(){
		"rope": func() { g.fuseRope = fuseRope }, "rec": func() { g.recLate = recLate },
		"gu": func() { g.guEarly = guEarly }, "dc": func() { g.dcSplit = dcSplit },
		"nr": func() { g.normRoute = normRoute }, "seg": func() { g.segFirst, g.segRest = segFirst, segRest },
		"gemv2": func() { g.gemv2 = gemv2 }, "rp": func() { g.readPinned = readPinned },
		"dcpre": func() { g.dcPre = dcPre }, "ng": func() { g.normGEMV = ng },
		"wr": func() { g.warpRoute = wr }, "g4": func() { g.gemv4n = g4 }, "dr": func() { g.dcReg = dr },
		"rg": func() { g.recGate = rg }, "ru": func() { g.routeUnroll = ru }, "gd": func() { g.moeFused = gd },
		"gs": func() { g.gdStage = gs }, "gsp": func() { g.gdSharedPre = gsp },
		"gf": func() { g.gdFlip = gf }, "gna": func() { g.gdNA = gna }, "gp": func() { g.gdPipe = gp }, "rd": func() { g.readDirect = rd },
		"na":   func() { setNA(ldNA) },
		"gv":   func() { g.gdVar = gv },
		"acs":  func() { g.attnCombineSeq = acs },
		"rl":   func() { g.recLoadsLate = rl },
		"rgb":  func() { g.recMinB = rgb },
		"f8t":  func() { g.fp8TMA = f8t },
		"b16t": func() { g.bf16TMA = b16t },
		"dcm":  func() { g.dcMMA = dcm },
		"dcw":  func() { g.dcWide = dcw },
		"gum":  func() { g.guMMA = gum },
		"q8":   func() { g.mmaE4M3 = q8 },
		"ka":   func() { g.attnBounds = ka },
		"dc1":  func() { g.dcOnePass = dc1 },
		"nrp":  func() { g.routePartials = nrp },
		"gvm":  func() { g.gvMMA = gvm },
		"v3":   func() { g.fp8V3 = v3 },
		"t9":   func() { g.fp8T9 = t9 },
		"t8l":  func() { g.fp8T8Late = t8l },
		"agm":  func() { g.attnGroupMin = agm },
		"rt":   func() { g.ropeTab = rt },
		"np":   func() { g.normPlain = np },
		"f8r":  func() { g.fp8Rows = f8r },
		"gu2":  func() { g.guPairs = gu2 },
		"dcl":  func() { g.dclRows = dcl },
		"f84":  func() { g.fp8Rows4Min = f84 },
	}
	for name, kn := range k {
		kn.restore = restore[name]
		k[name] = kn
	}
	return k
}

// BenchmarkPrefillOps times the prefill attention and MoE of one layer at
// Ring-mini-linear-2.0's shapes (8,192 rows; 16 query and 4 KV heads of 128;
// 256 experts of 512, top 8, hidden 2048) with each kernel variant, in one
// process, and reports TFLOP/s (attention: the causal score and value
// products; MoE: the routed experts' three products).
func BenchmarkPrefillOps(b *testing.B) {
	g := gpu(b, false)
	const T, D, H, Hkv, hd, pos = 8192, 2048, 16, 4, 128, 24576
	rng := rand.New(rand.NewSource(1))
	randTensor := func(rows, cols int) backend.Tensor {
		x := g.Alloc(rows, cols)
		v := make([]float32, rows*cols)
		for i := range v {
			v[i] = rng.Float32()*2 - 1
		}
		g.Write(x, v)
		return x
	}
	timeIt := func(b *testing.B, flop float64, f func()) {
		sec := timeCalls(b, g, f)
		b.ReportMetric(flop/sec/1e12, "TFLOP/s")
		b.ReportMetric(sec*1e3, "ms/call")
	}
	fa2, fa3, fa4, fa4w, mmb := g.fa2, g.fa3, g.fa4, g.fa4w, g.mmb
	defer func() { g.fa2, g.fa3, g.fa4, g.fa4w, g.mmb = fa2, fa3, fa4, fa4w, mmb }()

	q, k, v, o := randTensor(T, H*hd), randTensor(T, Hkv*hd), randTensor(T, Hkv*hd), g.Alloc(T, H*hd)
	kv := backend.KV{K: randTensor(pos+T, Hkv*hd), V: randTensor(pos+T, Hkv*hd)}
	keys := float64(T)*pos + float64(T)*(T+1)/2 // keys seen, summed over the rows
	for _, c := range []struct {
		name                string
		fa2, fa3, fa4, fa4w bool
	}{{"fattn", false, false, false, false}, {"fattn2", true, false, false, false}, {"fattn3", true, true, false, false},
		{"fattn4", true, true, true, false}, {"fattn4w", true, true, true, true}} {
		if c.fa4 && !fa4 || c.fa4w && !fa4w {
			continue
		}
		b.Run("Attention/"+c.name, func(b *testing.B) {
			g.fa2, g.fa3, g.fa4, g.fa4w = c.fa2, c.fa3, c.fa4, c.fa4w
			timeIt(b, 4*H*hd*keys, func() {
				g.Attention(o, q, k, v, []backend.Span{{Row: 0, N: T, Pos: pos}}, []backend.KV{kv}, hd, 0.088)
			})
		})
	}

	const E, I, K = 256, 512, 8
	ex := randGPUExperts(b, g, rng, E, I, D)
	x, y := randTensor(T, D), g.Alloc(T, D)
	rt := g.Route(randTensor(T, E), nil, backend.RouteParams{TopK: K, Groups: 8, TopKGroups: 4, Sigmoid: true, Normalize: true, Scale: 2.5})
	wg, yb, stage := g.wgmma, g.moeYB, g.mmbStage
	defer func() { g.wgmma, g.moeYB, g.mmbStage = wg, yb, stage }()
	for _, c := range []struct {
		name               string
		mmb, wg, yb, stage bool
	}{{"moe_mma", false, false, false, false}, {"moe_mmb", true, false, false, false}, {"moe_mmb_wg", true, true, false, false},
		{"moe_mmb_wg_yb", true, true, true, false}, {"moe_mmb_wg_yb_stage", true, true, true, true}} {
		if c.wg && !wg {
			continue
		}
		b.Run("MoE/"+c.name, func(b *testing.B) {
			g.mmb, g.wgmma, g.moeYB, g.mmbStage = c.mmb, c.wg, c.yb, c.stage
			timeIt(b, 2*3*float64(T)*K*I*D, func() { g.MoE(y, x, rt, ex) })
		})
	}
}

// TestParseDecodeSettings checks BenchmarkDecodeAB's settings on a backend
// that is only a struct (no GPU needed): knob=value lists, the defaults,
// the positional form, and the errors.
func TestParseDecodeSettings(t *testing.T) {
	g := &Backend{fuseRope: true, dcSplit: 2, segFirst: 24, gemv2: 4096, readPinned: true, dcPre: true, normRoute: true}
	knobs := decodeKnobs(g)
	settings, err := parseDecodeSettings("rope=0,dc=3,seg=16-8;;1/0/1/0/0/0/2048/0", knobs)
	if err != nil {
		t.Fatal(err)
	}
	type state struct {
		rope, recLate, gu, nr, rp, pre bool
		dc, sf, sr, g2                 int
	}
	get := func() state {
		return state{g.fuseRope, g.recLate, g.guEarly, g.normRoute, g.readPinned, g.dcPre, g.dcSplit, g.segFirst, g.segRest, g.gemv2}
	}
	apply := func(s decodeSetting) state {
		for _, k := range knobs {
			k.restore()
		}
		for _, f := range s.set {
			f()
		}
		return get()
	}
	defaults := state{rope: true, nr: true, rp: true, pre: true, dc: 2, sf: 24, g2: 4096}
	for i, want := range []state{
		{rope: false, nr: true, rp: true, pre: true, dc: 3, sf: 16, sr: 8, g2: 4096},
		defaults,
		{rope: true, recLate: true, gu: true, nr: false, rp: false, pre: true, dc: 2, sf: 0, sr: 0, g2: 2048},
	} {
		if got := apply(settings[i]); got != want {
			t.Errorf("setting %d (%s): %+v, want %+v", i, settings[i].name, got, want)
		}
	}
	if settings[1].name != "(defaults)" {
		t.Errorf("empty setting named %q", settings[1].name)
	}
	for _, k := range knobs {
		k.restore()
	}
	if got := get(); got != defaults {
		t.Errorf("after restore: %+v, want %+v", got, defaults)
	}
	for _, bad := range []string{"nope=1", "rope=2", "dc=4", "seg=x", "1/1/1/0/1/1/0/1/1", "gemv2=-1"} {
		if _, err := parseDecodeSettings(bad, knobs); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// benchBuffers allocates zeroed device buffers of the given sizes (bytes)
// for a benchmark, freed when it ends.
func benchBuffers(b *testing.B, g *Backend, sizes ...int) []uintptr {
	d := g.d
	defer g.enter()()
	ps := make([]uintptr, len(sizes))
	b.Cleanup(func() {
		defer g.enter()()
		for _, p := range ps {
			if p != 0 {
				ccall(d.cuMemFree, p)
			}
		}
	})
	for i, n := range sizes {
		if err := d.check(ccall(d.cuMemAlloc, uintptr(unsafe.Pointer(&ps[i])), uintptr(n)), "cuMemAlloc"); err != nil {
			b.Fatal(err)
		}
		ccall(d.cuMemsetD32Async, ps[i], 0, uintptr(n/4), 0)
	}
	g.sync()
	return ps
}

// chainTime runs call(0) .. call(n-1) once to warm up, then again, and
// returns the second chain's time to the GPU's end.
func chainTime(g *Backend, n int, call func(c int)) time.Duration {
	defer g.enter()()
	for c := range n {
		call(c)
	}
	g.sync()
	start := time.Now()
	for c := range n {
		call(c)
	}
	g.sync()
	return time.Since(start)
}

// BenchmarkMoERead times reading one decode MoE layer's weights at
// Ring-mini's shapes (9 experts of 6 MB: 8 routed and the shared one) with
// nothing else in the kernel (k_readexp), cycling through 20 layers of 256
// experts (30 GB, so that no call finds its experts in L2): nine experts
// drawn at random per call, as the routing does, against experts 0-8 of
// each layer, and k_readsum over one contiguous 56.6 MB range per layer.
// Each figure is µs per call over a chain of 400 calls; moe_gd_bf16v moves
// the same bytes in ~20 µs from its wait to its staged rows (docs/GPU.md).
func BenchmarkMoERead(b *testing.B) {
	g := gpu(b, false)
	const E, I, D, L, m, calls = 256, 512, 2048, 20, 9, 400
	n4gu, n4dn := 2*I*D*2/16, D*I*2/16
	var sizes []int
	for range L {
		sizes = append(sizes, E*n4gu*16, E*n4dn*16)
	}
	bufs := benchBuffers(b, g, append(sizes, 256, 4*calls*m, 4*calls*m)...)
	out, pr, pf := bufs[2*L], bufs[2*L+1], bufs[2*L+2]
	rng := rand.New(rand.NewSource(1))
	random, fixed := make([]int32, calls*m), make([]int32, calls*m)
	for c := range calls {
		for j, e := range rng.Perm(E)[:m] {
			random[c*m+j], fixed[c*m+j] = int32(e), int32(j)
		}
	}
	func() {
		defer g.enter()()
		ccall(g.d.cuMemcpyHtoD, pr, uintptr(unsafe.Pointer(&random[0])), uintptr(4*len(random)))
		ccall(g.d.cuMemcpyHtoD, pf, uintptr(unsafe.Pointer(&fixed[0])), uintptr(4*len(fixed)))
	}()
	bytes := float64(m * (n4gu + n4dn) * 16)
	gx := max(1, 4*g.sms/m)
	exp := func(ids uintptr) func(c int) {
		return func(c int) {
			l := c % L
			g.launch("k_readexp", dim3{gx, m, 1}, dim3{512, 1, 1}, 0, pArg(bufs[2*l]), pArg(bufs[2*l+1]), pArg(ids+uintptr(4*m*c)), lArg(n4gu), lArg(n4dn), pArg(out))
		}
	}
	flat := func(c int) {
		g.launch("k_readsum", dim3{g.sms * 8, 1, 1}, dim3{512, 1, 1}, 0, pArg(bufs[2*(c%L)]), lArg(int(bytes)/16), pArg(out))
	}
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		for _, r := range []struct {
			name string
			call func(c int)
		}{{"random experts", exp(pr)}, {"experts 0-8", exp(pf)}, {"contiguous", flat}, {"random experts", exp(pr)}, {"experts 0-8", exp(pf)}, {"contiguous", flat}} {
			us := chainTime(g, calls, r.call).Seconds() / calls * 1e6
			b.Logf("%-15s %7.2f µs per call, %6.0f GB/s (%.1f MB)", r.name, us, bytes/us/1e3, bytes/1e6)
		}
	}
}

// BenchmarkReadChain times plain streaming reads (k_readsum) of the sizes
// a lightning + MoE layer's decode kernels read (8.4 MB dense, 33.6 MB
// qkv|gate, 56.6 MB MoE), each in a chain of 400 calls over 20 buffers (so
// that no call finds its bytes in L2), and the three in a layer's order
// (qkv|gate, dense, MoE) as one chain: what each kernel of a layer could
// reach if it did nothing but read its weights. Each setting runs three
// times, alternated, as the rate drifts from set to set.
func BenchmarkReadChain(b *testing.B) {
	g := gpu(b, false)
	const nbuf, calls = 20, 400
	sizes := []int{8_388_608, 33_554_432, 56_623_104}
	bufs := benchBuffers(b, g, append(slices.Repeat(sizes[2:], nbuf), 256)...)
	out := bufs[nbuf]
	type setting struct {
		name  string
		sizes []int
	}
	settings := []setting{{"dense 8.4 MB", sizes[:1]}, {"qkv|gate 33.6 MB", sizes[1:2]}, {"MoE 56.6 MB", sizes[2:]}, {"layer (all three)", []int{sizes[1], sizes[0], sizes[2]}}}
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		for range 3 {
			for _, s := range settings {
				el := chainTime(g, calls, func(c int) {
					n := s.sizes[c%len(s.sizes)]
					g.launch("k_readsum", dim3{g.sms * 8, 1, 1}, dim3{512, 1, 1}, 0, pArg(bufs[c%nbuf]), lArg(n/16), pArg(out))
				})
				total := 0
				for c := range calls {
					total += s.sizes[c%len(s.sizes)]
				}
				us := el.Seconds() / calls * 1e6
				b.Logf("%-18s %7.2f µs per call, %7.2f per round of %d, %6.0f GB/s", s.name, us, us*float64(len(s.sizes)), len(s.sizes), float64(total)/el.Seconds()/1e9)
			}
		}
	}
}

// BenchmarkReadAfterIdle asks whether a stream of weights is slower right
// after the GPU's memory has been idle, as a decode MoE's is after the
// routing (~7 µs in which little is read): chains of 400 calls, each a
// 56.6 MB k_readsum (20 buffers, nothing found in L2) after a k_spin of
// 0 to 10 µs, less a chain of the spins alone, so the read's own time per
// call. Settings alternate, twice.
func BenchmarkReadAfterIdle(b *testing.B) {
	g := gpu(b, false)
	const nbuf, calls, size = 20, 400, 56_623_104
	bufs := benchBuffers(b, g, append(slices.Repeat([]int{size}, nbuf), 256)...)
	out := bufs[nbuf]
	read := func(c int) {
		g.launch("k_readsum", dim3{g.sms * 8, 1, 1}, dim3{512, 1, 1}, 0, pArg(bufs[c%nbuf]), lArg(size/16), pArg(out))
	}
	spin := func(ns int) { g.launch("k_spin", dim3{1, 1, 1}, dim3{32, 1, 1}, 0, lArg(ns)) }
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		for range 2 {
			for _, gap := range []int{0, 2000, 5000, 10000} {
				both := chainTime(g, calls, func(c int) {
					if gap > 0 {
						spin(gap)
					}
					read(c)
				})
				var alone time.Duration
				if gap > 0 {
					alone = chainTime(g, calls, func(int) { spin(gap) })
				}
				us := (both - alone).Seconds() / calls * 1e6
				b.Logf("read after %5.1f µs idle: %7.2f µs per read, %6.0f GB/s (spin alone %.2f µs)", float64(gap)/1e3, us, size/us/1e3, alone.Seconds()/calls*1e6)
			}
		}
	}
}

// BenchmarkMoEPattern asks whether moe_gd_bf16v's way of reading a decode
// MoE layer's routed weights (8 experts of Ring-mini: 33.5 MB of gate|up
// rows by pairs, 16.8 MB of down rows copied into shared memory) is slower
// than a plain read of the same bytes, and which part (its loads past L1
// or through it, its arithmetic or a plain sum): chains of 400 calls
// over 20 layers of 256 experts (nothing found in L2), eight random
// experts per call; k_readexp over the eight experts' 50.3 MB, k_readgd's
// variants (kernels.cu), and moe_gd_bf16v itself (with the shared expert,
// its rows staged before the wait as in decode: 4.2 MB more), its routed
// rows loaded past L1 (the default) or through it. Settings
// alternate, twice.
func BenchmarkMoEPattern(b *testing.B) {
	g := gpu(b, false)
	const E, I, D, L, K, calls = 256, 512, 2048, 20, 8, 400
	if !g.gdFits(K+1, I, D) {
		b.Skip("moe_gd_bf16v does not fit this GPU")
	}
	n4gu, n4dn := 2*I*D*2/16, D*I*2/16
	var sizes []int
	for range L {
		sizes = append(sizes, E*n4gu*16, E*n4dn*16)
	}
	// then: out, ids, shared gate|up and down, X, weights, pairs, Y
	bufs := benchBuffers(b, g, append(sizes, 256, 4*calls*K, n4gu*16, n4dn*16, 4*D, 4*K, 4*(K+1)*I, 4*D)...)
	out, ids, sgu, sdn, x, wts, act, y := bufs[2*L], bufs[2*L+1], bufs[2*L+2], bufs[2*L+3], bufs[2*L+4], bufs[2*L+5], bufs[2*L+6], bufs[2*L+7]
	rng := rand.New(rand.NewSource(1))
	random := make([]int32, calls*K)
	for c := range calls {
		for j, e := range rng.Perm(E)[:K] {
			random[c*K+j] = int32(e)
		}
	}
	func() {
		defer g.enter()()
		ccall(g.d.cuMemcpyHtoD, ids, uintptr(unsafe.Pointer(&random[0])), uintptr(4*len(random)))
	}()
	bytes := float64(K * (n4gu + n4dn) * 16)
	gx := max(1, 4*g.sms/K)
	exp := func(c int) {
		l := c % L
		g.launch("k_readexp", dim3{gx, K, 1}, dim3{512, 1, 1}, 0, pArg(bufs[2*l]), pArg(bufs[2*l+1]), pArg(ids+uintptr(4*K*c)), lArg(n4gu), lArg(n4dn), pArg(out))
	}
	pattern := func(mode int) func(c int) {
		return func(c int) {
			l := c % L
			g.launch("k_readgd", dim3{D / gdRows, 1, 1}, dim3{32 * gdWarps, 1, 1}, gdRows*K*I*2, pArg(bufs[2*l]), pArg(bufs[2*l+1]), pArg(ids+uintptr(4*K*c)),
				iArg(K), iArg(I), iArg(D), iArg(mode), pArg(x), pArg(act), pArg(out))
		}
	}
	gd := func(na bool) func(c int) {
		return func(c int) {
			l := c % L
			k := g.gdKernel()
			if !na {
				k = "moe_gd_bf16v_any" // the knob passed, not compiled in
			}
			g.launch(k, dim3{D / gdRows, 1, 1}, dim3{32 * gdWarps, 1, 1}, gdSmem(K+1, I, D, g.gdSharedPre),
				pArg(x), pArg(ids+uintptr(4*K*c)), pArg(wts), iArg(K), pArg(bufs[2*l]), pArg(bufs[2*l+1]), iArg(I), iArg(D), pArg(act), pArg(y),
				pArg(sgu), pArg(sdn), pArg(g.gdBar), bArg(false), iArg(g.gdStage), bArg(g.gdSharedPre), bArg(g.gdFlip), bArg(na), bArg(g.gdPipe))
		}
	}
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		for range 2 {
			for _, r := range []struct {
				name string
				call func(c int)
			}{{"k_readexp", exp}, {"pairs", pattern(0)}, {"pairs + copies", pattern(1)}, {"pairs at once", pattern(2)},
				{"at once + copies", pattern(3)}, {"copies alone", pattern(5)}, {"+ copies, L1", pattern(1 | 16)},
				{"+ copies, math", pattern(1 | 8)}, {"+ copies, math, L1", pattern(1 | 8 | 16)},
				{"moe_gd_bf16v", gd(true)}, {"moe_gd, L1 rows", gd(false)}} {
				us := chainTime(g, calls, r.call).Seconds() / calls * 1e6
				b.Logf("%-19s %7.2f µs per call, %6.0f GB/s of the routed 50.3 MB", r.name, us, bytes/us/1e3)
			}
		}
	}
}

// BenchmarkFP8MoEHot asks whether Ring-flash's FP8 decode MoE kernels
// (moe_gu2_fp8, moe_dcl2_fp8, and moe_dcmmat, the default on sm_90; 256
// experts of 1,024 × 4,096, 128 × 128 scale blocks) are bound by HBM or by
// their own work: chains of 400 calls of k slots each, the experts drawn
// at random per call (cold: 2.1 GB of gate|up rows, little found in L2) or
// experts 0..k-1 every call (hot: two slots' 16.8 MB of gate|up, 8.4 MB of
// down rows stay in L2), against
// k_readsum over the same number of bytes, cold (cycling through the
// gate|up buffer) and hot (one range). Hot as slow as cold means the
// kernel's work or latency, not HBM, sets its time. Then the rate of
// decoding and multiplying alone, values per µs per SM (k_fp8rate_hw: E4M3
// by the conversion units, as every FP8 kernel decodes; k_fp8rate_int: by
// integer operations; k_bf16rate: BF16), to set against the 34,000 per µs
// per SM that 4.5 TB/s of FP8 weights needs on 132 SMs. Settings alternate,
// twice.
func BenchmarkFP8MoEHot(b *testing.B) {
	g := gpu(b, false)
	if !g.fp8 {
		b.Skip("FP8 weights need fast mode")
	}
	const E, I, D, br, calls = 256, 1024, 4096, 128, 400
	wg, wd := g.moeWarps[0], g.moeWarps[1]
	guBytes, dnBytes := 2*I*D, D*I
	// gate|up, down, their scales, x, ids (random, fixed), weights, act, y, out, the rate kernels' out
	bufs := benchBuffers(b, g, E*guBytes, E*dnBytes, 4*E*(2*I/br)*(D/br), 4*E*(D/br)*(I/br), 4*D, 4*calls*8, 4*calls*8, 4*8, 4*9*I, 4*D, 256, 4*g.sms*8*256)
	gu, dn, gus, dns, x, idr, idf, wts, act, y, out := bufs[0], bufs[1], bufs[2], bufs[3], bufs[4], bufs[5], bufs[6], bufs[7], bufs[8], bufs[9], bufs[10]
	rout := bufs[11]
	rng := rand.New(rand.NewSource(1))
	random, fixed := make([]int32, calls*8), make([]int32, calls*8)
	for c := range calls {
		for j, e := range rng.Perm(E)[:8] {
			random[c*8+j], fixed[c*8+j] = int32(e), int32(j)
		}
	}
	func() {
		defer g.enter()()
		ccall(g.d.cuMemcpyHtoD, idr, uintptr(unsafe.Pointer(&random[0])), uintptr(4*len(random)))
		ccall(g.d.cuMemcpyHtoD, idf, uintptr(unsafe.Pointer(&fixed[0])), uintptr(4*len(fixed)))
	}()
	guCall := func(name string, k int, ids uintptr) func(c int) {
		return func(c int) {
			g.launch(name, dim3{I / (wg * 2), k, 1}, dim3{32 * wg, 1, 1}, 0, pArg(x), lArg(D), pArg(ids+uintptr(4*8*c)), iArg(k), pArg(gu), pArg(gus),
				iArg(br), iArg(br), iArg(I), iArg(D), pArg(act), pArg(0), pArg(0), iArg(k), bArg(false))
		}
	}
	dcCall := func(k int, ids uintptr) func(c int) {
		return func(c int) {
			g.launch("moe_dcl2_fp8", dim3{D / (wd * 2), 1, 1}, dim3{32 * wd, 1, 1}, 0, pArg(act), pArg(ids+uintptr(4*8*c)), pArg(wts), iArg(k), pArg(dn),
				pArg(dns), iArg(br), iArg(br), iArg(D), iArg(I), pArg(y), lArg(D), pArg(0), pArg(0), iArg(k), bArg(true))
		}
	}
	dcmCall := func(k int, ids uintptr) func(c int) { // the default on sm_90
		return func(c int) {
			g.launch("moe_dcmmat", dim3{D / 16, 1, 1}, dim3{32 * k, 1, 1}, dcmmatSmem(k, I, false), pArg(act), pArg(ids+uintptr(4*8*c)), pArg(wts), iArg(k),
				pArg(dn), pArg(dns), iArg(br), iArg(br), iArg(D), iArg(I), pArg(y), lArg(D), pArg(0), pArg(0), iArg(k), bArg(true))
		}
	}
	read := func(bytes int, hot bool) func(c int) {
		return func(c int) {
			off := 0
			if !hot {
				off = (c * bytes) % (E*guBytes - bytes) &^ 255
			}
			g.launch("k_readsum", dim3{g.sms * 8, 1, 1}, dim3{512, 1, 1}, 0, pArg(gu+uintptr(off)), lArg(bytes/16), pArg(out))
		}
	}
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		for range 2 {
			for _, r := range []struct {
				name  string
				bytes int
				call  func(c int)
			}{
				{"moe_gu2_fp8 8 cold", 8 * guBytes, guCall("moe_gu2_fp8", 8, idr)},
				{"moe_gu2_fp8 2 cold", 2 * guBytes, guCall("moe_gu2_fp8", 2, idr)},
				{"moe_gu2_fp8 2 hot", 2 * guBytes, guCall("moe_gu2_fp8", 2, idf)},
				{"k_readsum 8 cold", 8 * guBytes, read(8*guBytes, false)},
				{"k_readsum 2 cold", 2 * guBytes, read(2*guBytes, false)},
				{"k_readsum 2 hot", 2 * guBytes, read(2*guBytes, true)},
				{"moe_dcl2_fp8 8 cold", 8 * dnBytes, dcCall(8, idr)},
				{"moe_dcl2_fp8 2 cold", 2 * dnBytes, dcCall(2, idr)},
				{"moe_dcl2_fp8 2 hot", 2 * dnBytes, dcCall(2, idf)},
				{"moe_dcmmat 8 cold", 8 * dnBytes, dcmCall(8, idr)},
				{"moe_dcmmat 2 cold", 2 * dnBytes, dcmCall(2, idr)},
				{"moe_dcmmat 2 hot", 2 * dnBytes, dcmCall(2, idf)},
			} {
				us := chainTime(g, calls, r.call).Seconds() / calls * 1e6
				b.Logf("%-20s %7.2f µs per call, %6.0f GB/s (%.1f MB)", r.name, us, float64(r.bytes)/us/1e3, float64(r.bytes)/1e6)
			}
			// decoding alone: values per µs per SM (16 E4M3 or 8 BF16 per chunk)
			for _, k := range []struct {
				name string
				n    int
			}{{"k_fp8rate_hw", 16}, {"k_fp8rate_int", 16}, {"k_bf16rate", 8}} {
				const iters = 2048
				blocks := g.sms * 8
				us := chainTime(g, 20, func(int) {
					g.launch(k.name, dim3{blocks, 1, 1}, dim3{256, 1, 1}, 0, iArg(iters), pArg(rout))
				}).Seconds() / 20 * 1e6
				vals := float64(blocks*256*iters*4*k.n) / us / float64(g.sms)
				b.Logf("%-20s %7.2f µs per call, %6.0f values per µs per SM", k.name, us, vals)
			}
		}
	}
}

// BenchmarkBulkPattern asks whether the FP8 decode kernels' copy pattern
// costs bandwidth: k_bulkpat streams the bytes of Ring-flash's decode
// gate|up (1,152 warps of 16 rows × 4,096 bytes, 75.5 MB, moe_gummat9w's
// grid of 128 blocks of 9 warps, two rounds in flight per warp) with no
// arithmetic, (a) as moe_gummat9w asks for them (16 pieces of 512 bytes, a
// row apart), (b) in rounds stored contiguously (one copy of 8 KB, the
// layout a tile-major copy of the weights would have), (c) the same
// contiguous rounds in 16 copies of 512 bytes, and k_readsum reading the
// same buffer; chains of 200 calls over 12 buffers (nothing found in L2),
// alternated twice. sm_90.
func BenchmarkBulkPattern(b *testing.B) {
	g := gpu(b, false)
	if g.ccMaj < 9 {
		b.Skip("bulk copies need sm_90")
	}
	const nbuf, calls, warps, tile = 12, 200, 1152, 16 * 4096
	size := warps * tile
	bufs := benchBuffers(b, g, append(slices.Repeat([]int{size}, nbuf), 256)...)
	out := bufs[nbuf]
	type pattern struct {
		name        string
		np, psz     int
		ps, ru      int64
		readsumOnly bool
	}
	pats := []pattern{
		{"rows (moe_gummat9w)", 16, 512, 4096, 512, false},
		{"contiguous, 1 copy", 1, 8192, 0, 8192, false},
		{"contiguous, 16 copies", 16, 512, 512, 8192, false},
		{"k_readsum", 0, 0, 0, 0, true},
	}
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		for range 2 {
			for _, p := range pats {
				el := chainTime(g, calls, func(c int) {
					if p.readsumOnly {
						g.launch("k_readsum", dim3{g.sms * 8, 1, 1}, dim3{512, 1, 1}, 0, pArg(bufs[c%nbuf]), lArg(size/16), pArg(out))
						return
					}
					g.launch("k_bulkpat", dim3{warps / 9, 1, 1}, dim3{288, 1, 1}, 9*2*p.np*p.psz, pArg(bufs[c%nbuf]), lArg(tile), iArg(8),
						iArg(p.np), iArg(p.psz), lArg(int(p.ps)), lArg(int(p.ru)), pArg(out))
				})
				us := el.Seconds() / calls * 1e6
				b.Logf("%-22s %7.2f µs per call, %6.0f GB/s", p.name, us, float64(size)/us/1e3)
			}
		}
	}
}
