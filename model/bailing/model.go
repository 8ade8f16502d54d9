// Package bailing implements the Bailing MoE V2 family: Ring-linear 2.0
// (BailingMoeLinearV2ForCausalLM: lightning attention with a softmax layer
// every layer_group_size layers) and Ling/Ring 2.0 (BailingMoeV2ForCausalLM:
// softmax attention only). Both share the embedding, pre-norm residual
// blocks, QK-norm with partial NeoX RoPE and the sigmoid-routed MoE.
//
// The code describes what is computed, with the operations of package
// backend; how it is computed is the backend's business.
package bailing

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/internal/hugepage"
	"github.com/ringo-ai/ringo/model"
)

// Options configure loading.
type Options struct {
	Decay DecayConvention // "" = default (sglang)
	// MaxBatchRows bounds the rows of one forward pass; longer prompts are
	// prefilled in chunks of this many tokens (0 = 512).
	MaxBatchRows int
}

// Model is a loaded Bailing model.
type Model struct {
	Config *Config
	b      backend.Backend
	info   model.Info
	opts   Options

	embed, lmHead, norm backend.Weight
	layers              []layer
	rope                backend.RoPE

	mu sync.Mutex
	ws *workspace
	sc scratch
}

// scratch holds the per-pass bookkeeping, reused so that a decode step
// allocates nothing.
type scratch struct {
	done    []int
	pass    []piece
	ids     []int32
	pos     []int32
	spans   []backend.Span
	outRows []int
	outs    []outRow
	states  []backend.Tensor
	caches  []backend.KV
	draws   []backend.Draw
	tokens  []int32
}

// outRow is where a pass's output row goes: the logits row of request req
// for its token pos (0 for requests that keep only their last token's).
type outRow struct {
	req *model.Request
	pos int
}

// maxLogitRows bounds the rows of one output projection. A pass whose
// requests want every position's logits (ringo logits, quality) projects
// them this many at a time, so that its logits buffer (a vocabulary of
// floats a row: 2.6 GB for 4,096 rows of Ring's 157K) does not grow with
// the pass (a GPU pass is 32,768 rows).
var maxLogitRows = 4096

type layer struct {
	linear           bool
	inNorm, postNorm backend.Weight
	qkv              backend.Weight
	qkvg             backend.Weight // linear layers: qkv and gProj stacked when stored alike (then qkv, gProj are nil)
	qkNorm           backend.Weight // per-head RMSNorm weights of q and k, one per head (nil without QK norm)
	dense            backend.Weight // attention output projection
	gProj, gNorm     backend.Weight // lightning output gate (linear layers)
	decay            []float32      // per head (linear layers)
	ffn              ffn
	linearIdx, kvIdx int // index among linear / softmax layers
}

type ffn struct {
	// dense SwiGLU (first_k_dense_replace layers) or shared experts: gate
	// and up stacked as one [2I, D] weight when stored alike, else apart
	gateUp, gate, up, down backend.Weight
	// routed experts
	router  backend.Weight
	bias    backend.Weight
	experts backend.Experts
}

// Load builds the model from a checkpoint's config and weights.
func Load(cfgJSON []byte, gen checkpoint.GenerationConfig, src checkpoint.Source, b backend.Backend, opts Options) (*Model, error) {
	cfg, err := ParseConfig(cfgJSON)
	if err != nil {
		return nil, err
	}
	if opts.Decay == "" {
		if opts.Decay, err = ParseDecayConvention(""); err != nil {
			return nil, err
		}
	}
	if opts.MaxBatchRows <= 0 {
		opts.MaxBatchRows = 512
	}
	m := &Model{Config: cfg, b: b, opts: opts, rope: backend.RoPE{Dim: cfg.RopeDim(), Theta: cfg.RopeTheta}}
	m.info = model.Info{Arch: cfg.Architectures[0], VocabSize: cfg.VocabSize, MaxContext: cfg.MaxPositionEmbeddings, Layers: cfg.NumHiddenLayers}
	seen := map[int32]bool{}
	for _, id := range append(append([]int32{}, cfg.EOSTokenID...), gen.EOSTokenIDs...) {
		if !seen[id] {
			seen[id] = true
			m.info.EOS = append(m.info.EOS, id)
		}
	}
	l := &loader{src: src, b: b}
	D, V := cfg.HiddenSize, cfg.VocabSize
	m.embed = l.w("model.word_embeddings.weight", V, D)
	m.norm = l.w("model.norm.weight", D)
	if cfg.TieWordEmbeddings && !src.Has("lm_head.weight") {
		m.lmHead = m.embed
	} else {
		m.lmHead = l.w("lm_head.weight", V, D)
	}
	H, Hkv, d := cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim
	nLin, nKV := 0, 0
	for i := 0; i < cfg.NumHiddenLayers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		ly := layer{linear: cfg.IsLinearLayer(i)}
		ly.inNorm = l.w(p+"input_layernorm.weight", D)
		ly.postNorm = l.w(p+"post_attention_layernorm.weight", D)
		if ly.linear {
			ly.linearIdx = nLin
			nLin++
			ly.qkvg, ly.qkv, ly.gProj = l.pair(p+"attention.query_key_value.weight", 3*H*d, p+"attention.g_proj.weight", H*d, D)
			ly.gNorm = l.w(p+"attention.g_norm.weight", H*d)
			ly.decay = Decay(opts.Decay, H, i, cfg.NumHiddenLayers)
		} else {
			ly.kvIdx = nKV
			nKV++
			ly.qkv = l.w(p+"attention.query_key_value.weight", (H+2*Hkv)*d, D)
		}
		if cfg.UseQKNorm {
			kHeads := Hkv
			if ly.linear {
				kHeads = H
			}
			ly.qkNorm = l.headNorms(p+"attention.query_layernorm.weight", H, p+"attention.key_layernorm.weight", kHeads, d)
		}
		ly.dense = l.w(p+"attention.dense.weight", D, H*d)
		if i < cfg.FirstKDenseReplace {
			I := cfg.IntermediateSize
			ly.ffn.gateUp, ly.ffn.gate, ly.ffn.up = l.pair(p+"mlp.gate_proj.weight", I, p+"mlp.up_proj.weight", I, D)
			ly.ffn.down = l.w(p+"mlp.down_proj.weight", D, I)
		} else {
			E, I := cfg.NumExperts, cfg.MoeIntermediateSize
			ly.ffn.router = l.w(p+"mlp.gate.weight", E, D)
			if cfg.MoeRouterEnableExpertBias || src.Has(p+"mlp.gate.expert_bias") {
				ly.ffn.bias = l.w(p+"mlp.gate.expert_bias", E)
			}
			var g, u, dn []backend.HostWeight
			for e := 0; e < E; e++ {
				q := fmt.Sprintf("%smlp.experts.%d.", p, e)
				g = append(g, l.hw(q+"gate_proj.weight", I, D))
				u = append(u, l.hw(q+"up_proj.weight", I, D))
				dn = append(dn, l.hw(q+"down_proj.weight", D, I))
			}
			if l.err == nil {
				ly.ffn.experts, l.err = b.UploadExperts(g, u, dn)
			}
			if cfg.NumSharedExperts > 0 {
				// The reference implementations disagree on the shared width
				// (moe_intermediate_size or moe_shared_expert_intermediate_size,
				// times num_shared_experts): accept either, as stored.
				name := p + "mlp.shared_experts.gate_proj.weight"
				SI := cfg.SharedIntermediate()
				if s := src.Shape(name); len(s) == 2 && s[0] == cfg.MoeIntermediateSize*cfg.NumSharedExperts {
					SI = s[0]
				}
				ly.ffn.gateUp, ly.ffn.gate, ly.ffn.up = l.pair(name, SI, p+"mlp.shared_experts.up_proj.weight", SI, D)
				ly.ffn.down = l.w(p+"mlp.shared_experts.down_proj.weight", D, SI)
			}
		}
		m.layers = append(m.layers, ly)
	}
	if l.err != nil {
		return nil, l.err
	}
	for _, lin := range m.layers {
		m.info.LinearLayer = append(m.info.LinearLayer, lin.linear)
		hd := int64(cfg.NumAttentionHeads) * int64(cfg.HeadDim)
		if lin.linear {
			m.info.LinearFLOPsPerToken += 2 * 2 * hd * int64(cfg.HeadDim)
		} else {
			m.info.AttentionFLOPsPerKey += 2 * 2 * hd
		}
	}
	embBytes := l.embedding
	m.info.WeightBytes = l.dense + l.expert
	if m.lmHead == m.embed {
		m.info.ActiveBytes = l.dense
	} else {
		m.info.ActiveBytes = l.dense - embBytes + embBytes/int64(V)
	}
	moeLayers := int64(cfg.NumHiddenLayers - min(cfg.FirstKDenseReplace, cfg.NumHiddenLayers))
	if moeLayers > 0 {
		m.info.ActiveBytes += l.expert * int64(cfg.NumExpertsPerTok) / int64(cfg.NumExperts)
		m.info.RoutedBytes, m.info.Experts, m.info.ExpertsPerToken = l.expert, cfg.NumExperts, cfg.NumExpertsPerTok
	}
	m.info.OutputFLOPs = 2 * int64(V) * int64(D)
	m.info.FLOPsPerToken = 2*(l.denseMACs+l.expertMACs*int64(cfg.NumExpertsPerTok)/int64(max(1, cfg.NumExperts))) - m.info.OutputFLOPs
	if m.lmHead == m.embed {
		m.info.FLOPsPerToken += m.info.OutputFLOPs // the tied table was not counted as a product
	}
	// the KV cache's storage is the backend's choice (Options.KVCache): probe it
	const probeRows = 64 // a multiple of any backend's row tiles
	probe := b.AllocKV(probeRows, Hkv*d)
	m.info.KVBytesPerToken = int64(cfg.SoftmaxLayerCount()) * (backend.BufferBytes(probe.K) + backend.BufferBytes(probe.V)) / probeRows
	b.Free(probe.K)
	b.Free(probe.V)
	m.info.StateBytes = int64(cfg.LinearLayerCount()) * int64(H*d*d) * 4
	return m, nil
}

// loader uploads weights, remembering the first error.
type loader struct {
	src checkpoint.Source
	b   backend.Backend
	err error
	// bytes and multiply-accumulates of dense and routed-expert weights
	dense, expert, denseMACs, expertMACs, embedding int64
}

func (l *loader) hw(name string, shape ...int) backend.HostWeight {
	if l.err != nil {
		return backend.HostWeight{}
	}
	w, err := l.src.Weight(name, shape...)
	if err != nil {
		l.err = err
	}
	n := int64(len(w.Data) + 4*len(w.Scale))
	if strings.Contains(name, ".mlp.experts.") {
		l.expert += n
		l.expertMACs += int64(w.Rows) * int64(w.Cols)
	} else {
		l.dense += n
		switch {
		case strings.HasSuffix(name, "word_embeddings.weight"):
			l.embedding = n
		case w.Rows > 1:
			l.denseMACs += int64(w.Rows) * int64(w.Cols)
		}
	}
	return w
}

func (l *loader) w(name string, shape ...int) backend.Weight {
	return l.upload(l.hw(name, shape...))
}

// upload makes hw available to the backend.
func (l *loader) upload(hw backend.HostWeight) backend.Weight {
	if l.err != nil {
		return nil
	}
	w, err := l.b.Upload(hw)
	if err != nil {
		l.err = fmt.Errorf("upload %s: %w", hw.Name, err)
	}
	return w
}

// pair loads two weights that multiply the same input ([ra, cols] and
// [rb, cols], e.g. a SwiGLU's gate and up): stacked as one [ra+rb, cols]
// weight when they are stored alike, so that one product computes both,
// else as two weights (stacked is then nil).
func (l *loader) pair(a string, ra int, b string, rb, cols int) (stacked, wa, wb backend.Weight) {
	ha, hb := l.hw(a, ra, cols), l.hw(b, rb, cols)
	if l.err != nil {
		return nil, nil, nil
	}
	if s, ok := stackRows(ha, hb); ok {
		return l.upload(s), nil, nil
	}
	return nil, l.upload(ha), l.upload(hb)
}

// stackRows returns a on top of b as one weight, if both have the same
// storage (kind, block type, FP8 blocks that stay whole) and width.
func stackRows(a, b backend.HostWeight) (backend.HostWeight, bool) {
	if a.Kind != b.Kind || a.QType != b.QType || a.Cols != b.Cols || a.BlockRows != b.BlockRows || a.BlockCols != b.BlockCols {
		return backend.HostWeight{}, false
	}
	if a.Kind == backend.F8E4M3 && (a.BlockRows <= 0 || a.Rows%a.BlockRows != 0) {
		return backend.HostWeight{}, false
	}
	s := a
	s.Name = a.Name + "+" + b.Name
	s.Rows = a.Rows + b.Rows
	s.Data = hugepage.Make[byte](len(a.Data) + len(b.Data))
	copy(s.Data[copy(s.Data, a.Data):], b.Data)
	if a.Scale != nil {
		s.Scale = append(append(make([]float32, 0, len(a.Scale)+len(b.Scale)), a.Scale...), b.Scale...)
	}
	return s, true
}

// headNorms loads the per-head RMSNorm weights of q (qHeads heads) and k
// (kHeads heads), d values each, as one weight over the q|k columns: the q
// weight repeated qHeads times, then the k weight kHeads times.
func (l *loader) headNorms(qName string, qHeads int, kName string, kHeads, d int) backend.Weight {
	q, k := l.hw(qName, d), l.hw(kName, d)
	if l.err != nil {
		return nil
	}
	if q.Kind != k.Kind || q.QType != k.QType || len(q.Data) != len(k.Data) {
		l.err = fmt.Errorf("%s is %v and %s is %v: want the same type", qName, q.Kind, kName, k.Kind)
		return nil
	}
	w := q
	w.Name, w.Cols = qName+"+"+kName, (qHeads+kHeads)*d
	w.Data = make([]byte, 0, (qHeads+kHeads)*len(q.Data))
	for i := 0; i < qHeads+kHeads; i++ {
		if i < qHeads {
			w.Data = append(w.Data, q.Data...)
		} else {
			w.Data = append(w.Data, k.Data...)
		}
	}
	return l.upload(w)
}

// Info implements model.Model.
func (m *Model) Info() model.Info { return m.info }

// Backend returns the backend the model runs on.
func (m *Model) Backend() backend.Backend { return m.b }

// Close implements model.Model.
func (m *Model) Close() error { return nil }

// Forward implements model.Model. Requests are packed into passes of at most
// MaxBatchRows rows; a long prompt is split over several passes, each
// continuing from the state the previous one left.
func (m *Model) Forward(ctx context.Context, reqs []*model.Request) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	V := m.Config.VocabSize
	done := m.sc.done[:0]
	for range reqs {
		done = append(done, 0)
	}
	m.sc.done = done
	for i, r := range reqs {
		st, ok := r.State.(*State)
		if !ok || st.m != m {
			return fmt.Errorf("request %d: state does not belong to this model", i)
		}
		if len(r.Tokens) == 0 {
			return fmt.Errorf("request %d: no tokens", i)
		}
		for _, t := range r.Tokens {
			if t < 0 || int(t) >= V {
				return fmt.Errorf("request %d: token %d outside the vocabulary of %d", i, t, V)
			}
		}
		n := V
		if r.All {
			n = len(r.Tokens) * V
		}
		if d := r.Draw; d != nil && (!(d.InvTemp >= 0) || math.IsInf(float64(d.InvTemp), 0) || !(d.U >= 0 && d.U < 1) || d.TopK < 0 || !(d.TopP >= 0 && d.TopP <= 1) || !(d.MinP >= 0 && d.MinP <= 1)) {
			return fmt.Errorf("request %d: draw %+v (want a finite 1/temperature >= 0, a uniform number in [0, 1), top-k >= 0, top-p and min-p in [0, 1])", i, *d)
		}
		r.Drawn = false
		if m.drawsOn(r) {
			n = 0 // the backend draws the token
		}
		if cap(r.Logits) < n {
			r.Logits = make([]float32, n)
		}
		r.Logits = r.Logits[:n]
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		pass := m.sc.pass[:0]
		rows := 0
		for i, r := range reqs {
			left := len(r.Tokens) - done[i]
			if left == 0 || rows == m.opts.MaxBatchRows {
				continue
			}
			n := min(left, m.opts.MaxBatchRows-rows)
			pass = append(pass, piece{req: r, off: done[i], n: n})
			rows += n
			done[i] += n
		}
		m.sc.pass = pass
		if len(pass) == 0 {
			return nil
		}
		m.forward(pass, rows)
	}
}

// piece is the part of a request run in one pass.
type piece struct {
	req    *model.Request
	off, n int
}

// State is a sequence's caches: one float32 state per lightning layer and a
// growing KV cache per softmax layer.
type State struct {
	m      *Model
	pos    int
	linear []backend.Tensor // [H·d, d] per lightning layer
	kv     []backend.KV
	kvCap  int
}

// NewState implements model.Model.
func (m *Model) NewState() model.State {
	c := m.Config
	s := &State{m: m}
	for _, ly := range m.layers {
		if ly.linear {
			s.linear = append(s.linear, m.b.Alloc(c.NumAttentionHeads*c.HeadDim, c.HeadDim))
		} else {
			s.kv = append(s.kv, backend.KV{})
		}
	}
	return s
}

// Len implements model.State.
func (s *State) Len() int { return s.pos }

// Bytes implements model.State.
func (s *State) Bytes() int64 {
	var n int64
	for _, t := range s.linear {
		n += int64(t.Rows * t.Cols * 4)
	}
	for _, kv := range s.kv {
		n += backend.BufferBytes(kv.K) + backend.BufferBytes(kv.V)
	}
	return n
}

// Fork implements model.State.
func (s *State) Fork() model.State {
	b := s.m.b
	f := &State{m: s.m, pos: s.pos}
	for _, t := range s.linear {
		c := b.Alloc(t.Rows, t.Cols)
		b.Copy(c, t)
		f.linear = append(f.linear, c)
	}
	f.kvCap = s.pos
	for _, kv := range s.kv {
		var n backend.KV
		if s.pos > 0 {
			n = b.AllocKV(s.pos, kv.K.Cols)
			b.Copy(n.K, kv.K.RowRange(0, s.pos))
			b.Copy(n.V, kv.V.RowRange(0, s.pos))
		}
		f.kv = append(f.kv, n)
	}
	return f
}

// Free implements model.State.
func (s *State) Free() {
	b := s.m.b
	for _, t := range s.linear {
		b.Free(t)
	}
	for _, kv := range s.kv {
		if kv.K.Buf != nil {
			b.Free(kv.K)
			b.Free(kv.V)
		}
	}
	s.linear, s.kv = nil, nil
}

// reserve grows the KV caches to hold n positions.
func (s *State) reserve(n int) {
	if n <= s.kvCap || len(s.kv) == 0 {
		return
	}
	b := s.m.b
	c := max(n, 2*s.kvCap, 64)
	cols := s.m.Config.NumKeyValueHeads * s.m.Config.HeadDim
	for i, kv := range s.kv {
		n := b.AllocKV(c, cols)
		if s.pos > 0 {
			b.Copy(n.K.RowRange(0, s.pos), kv.K.RowRange(0, s.pos))
			b.Copy(n.V.RowRange(0, s.pos), kv.V.RowRange(0, s.pos))
		}
		if kv.K.Buf != nil {
			b.Free(kv.K)
			b.Free(kv.V)
		}
		s.kv[i] = n
	}
	s.kvCap = c
}

// workspace holds the activations of one pass, reused between passes.
type workspace struct {
	rows            int
	x, h, qkv, o, a backend.Tensor // qkv: q|k|v (|gate, linear layers)
	f, ffnGU        backend.Tensor // ffnGU: gate | up
	router          backend.Tensor
	logitRows       backend.Tensor
	logits          backend.Tensor
}

func (m *Model) workspace(rows, logitRows int) *workspace {
	if m.ws != nil && m.ws.rows >= rows && m.ws.logits.Rows >= logitRows {
		return m.ws
	}
	if m.ws != nil {
		for _, t := range []backend.Tensor{m.ws.x, m.ws.h, m.ws.qkv, m.ws.o, m.ws.a, m.ws.f, m.ws.ffnGU, m.ws.router, m.ws.logitRows, m.ws.logits} {
			if t.Buf != nil {
				m.b.Free(t)
			}
		}
	}
	c := m.Config
	rows = max(rows, 1)
	logitRows = max(logitRows, 1)
	D, Hd := c.HiddenSize, c.NumAttentionHeads*c.HeadDim
	qkvCols := (c.NumAttentionHeads + 2*c.NumKeyValueHeads) * c.HeadDim
	if c.Linear() {
		qkvCols = max(qkvCols, 4*Hd) // q, k, v and the output gate
	}
	inter := max(c.IntermediateSize, c.SharedIntermediate(), c.MoeIntermediateSize*max(1, c.NumSharedExperts))
	ws := &workspace{rows: rows}
	ws.x, ws.h, ws.a, ws.f = m.b.Alloc(rows, D), m.b.Alloc(rows, D), m.b.Alloc(rows, D), m.b.Alloc(rows, D)
	ws.qkv, ws.o = m.b.Alloc(rows, qkvCols), m.b.Alloc(rows, Hd)
	ws.ffnGU = m.b.Alloc(rows, 2*inter)
	ws.router = m.b.Alloc(rows, max(1, c.NumExperts))
	ws.logitRows = m.b.Alloc(logitRows, D)
	ws.logits = m.b.Alloc(logitRows, c.VocabSize)
	m.ws = ws
	return ws
}

// forward runs one pass over the pieces (rows in total).
func (m *Model) forward(pass []piece, rows int) {
	c, b := m.Config, m.b
	sc := &m.sc
	ids, pos, outRows, outs := sc.ids[:0], sc.pos[:0], sc.outRows[:0], sc.outs[:0]
	spans := sc.spans[:0]
	for _, p := range pass {
		st := p.req.State.(*State)
		spans = append(spans, backend.Span{Row: len(ids), N: p.n, Pos: st.pos})
		for j := 0; j < p.n; j++ {
			ids = append(ids, p.req.Tokens[p.off+j])
			pos = append(pos, int32(st.pos+j))
			if p.req.All {
				outRows, outs = append(outRows, len(ids)-1), append(outs, outRow{p.req, p.off + j})
			} else if p.off+j == len(p.req.Tokens)-1 {
				outRows, outs = append(outRows, len(ids)-1), append(outs, outRow{p.req, 0})
			}
		}
		st.reserve(st.pos + p.n)
	}
	sc.ids, sc.pos, sc.outRows, sc.outs, sc.spans = ids, pos, outRows, outs, spans
	ws := m.workspace(rows, min(len(outRows), maxLogitRows))
	x := ws.x.RowRange(0, rows)
	h := ws.h.RowRange(0, rows)
	a := ws.a.RowRange(0, rows)
	f := ws.f.RowRange(0, rows)
	eps := float32(c.RMSNormEps)
	b.Embed(x, m.embed, ids)
	b.RMSNorm(h, x, m.layers[0].inNorm, c.HiddenSize, eps)
	for i, ly := range m.layers {
		// h = RMSNorm(x) with this layer's input norm
		if ly.linear {
			m.lightning(ws, ly, a, h, pass, spans, pos)
		} else {
			m.attention(ws, ly, a, h, pass, spans, pos)
		}
		m.ffn(ws, &ly.ffn, f, h, x, a, ly.postNorm) // x += a; h = RMSNorm(x); f = FFN(h)
		if i+1 < len(m.layers) {
			// the residual x + f goes to a (free now), which becomes x: a
			// backend may then fuse the norm into the next product (x is
			// not updated in place while that product's blocks read it)
			backend.AddRMSNormTo(b, h, a, x, f, m.layers[i+1].inNorm, eps)
			x, a = a, x
		} else {
			b.Add(x, x, f) // the final norm runs on the output rows only
		}
	}
	for _, p := range pass {
		p.req.State.(*State).pos += p.n
	}
	// final norm and output projection only on the rows whose logits are
	// wanted, at most maxLogitRows at a time, each run of a request's
	// consecutive positions read back in one piece
	V := c.VocabSize
	for c0 := 0; c0 < len(outRows); c0 += maxLogitRows {
		n := min(maxLogitRows, len(outRows)-c0)
		y := ws.logitRows.RowRange(0, n)
		b.Gather(y, x, outRows[c0:c0+n])
		b.RMSNorm(y, y, m.norm, c.HiddenSize, eps)
		logits := ws.logits.RowRange(0, n)
		b.MatMul(logits, y, m.lmHead)
		for k := 0; k < n; {
			o, e := outs[c0+k], k+1
			for e < n && outs[c0+e].req == o.req && outs[c0+e].pos == o.pos+(e-k) {
				e++
			}
			if m.drawsOn(o.req) {
				// a run of rows whose tokens the backend draws
				for e = k + 1; e < n && m.drawsOn(outs[c0+e].req); e++ {
				}
				m.drawTokens(logits.RowRange(k, e-k), outs[c0+k:c0+e], V)
			} else {
				b.Read(logits.RowRange(k, e-k), o.req.Logits[o.pos*V:(o.pos+e-k)*V])
			}
			k = e
		}
	}
}

// drawsOn reports whether r's token is drawn by the backend (Request.Draw).
func (m *Model) drawsOn(r *model.Request) bool {
	d, ok := m.b.(backend.Drawer)
	return r.Draw != nil && !r.All && ok && d.Draws()
}

// drawTokens has the backend draw the tokens of outs (one row of logits
// each) and stores them in their requests; the rows it declines are read
// back into their requests' Logits (V values) instead.
func (m *Model) drawTokens(logits backend.Tensor, outs []outRow, V int) {
	sc := &m.sc
	sc.draws, sc.tokens = sc.draws[:0], sc.tokens[:0]
	for _, o := range outs {
		sc.draws = append(sc.draws, backend.Draw(*o.req.Draw))
		sc.tokens = append(sc.tokens, 0)
	}
	m.b.(backend.Drawer).DrawTokens(sc.tokens, logits, sc.draws)
	for i, o := range outs {
		if sc.tokens[i] >= 0 {
			o.req.Token, o.req.Drawn = sc.tokens[i], true
			continue
		}
		if cap(o.req.Logits) < V {
			o.req.Logits = make([]float32, V)
		}
		o.req.Logits = o.req.Logits[:V]
		m.b.Read(logits.RowRange(i, 1), o.req.Logits)
	}
}

// lightning is the linear-attention mixer (spec §4):
//
//	q, k, v = split(h·Wqkv);  q, k = RoPE(RMSNorm_head(q)), RoPE(RMSNorm_head(k))
//	o = Lightning(q, k, v) with decay exp(−a_h), scale 1/√d
//	out = (GroupRMSNorm(o) ⊙ sigmoid(h·Wg)) · Wdenseᵀ
func (m *Model) lightning(ws *workspace, ly layer, out, h backend.Tensor, pass []piece, spans []backend.Span, pos []int32) {
	c, b := m.Config, m.b
	T, Hd, d := h.Rows, c.NumAttentionHeads*c.HeadDim, c.HeadDim
	qkvg := ws.qkv.RowRange(0, T).ColRange(0, 4*Hd)
	qkv, g := qkvg.ColRange(0, 3*Hd), qkvg.ColRange(3*Hd, Hd)
	if ly.qkvg != nil {
		b.MatMul(qkvg, h, ly.qkvg)
	} else {
		b.MatMul(qkv, h, ly.qkv)
		b.MatMul(g, h, ly.gProj)
	}
	if c.LinearSilu {
		b.SiLU(qkv, qkv)
	}
	states := m.sc.states[:0]
	for _, p := range pass {
		states = append(states, p.req.State.(*State).linear[ly.linearIdx])
	}
	m.sc.states = states
	o := ws.o.RowRange(0, T)
	scale := float32(1 / math.Sqrt(float64(d)))
	if ly.qkNorm != nil {
		backend.NormRoPELightning(b, o, qkv.ColRange(0, 2*Hd), qkv.ColRange(2*Hd, Hd), ly.qkNorm, d, float32(c.RMSNormEps), m.rope, pos, spans, states, ly.decay, scale)
	} else {
		m.qkNormRoPE(ly, qkv.ColRange(0, 2*Hd), pos)
		b.Lightning(o, qkv.ColRange(0, Hd), qkv.ColRange(Hd, Hd), qkv.ColRange(2*Hd, Hd), spans, states, ly.decay, scale)
	}
	backend.RMSNormSigmoidMul(b, o, o, g, ly.gNorm, Hd/c.GroupNormSize, float32(c.RMSNormEps))
	b.MatMul(out, o, ly.dense)
}

// attention is the softmax GQA mixer (spec §5).
func (m *Model) attention(ws *workspace, ly layer, out, h backend.Tensor, pass []piece, spans []backend.Span, pos []int32) {
	c, b := m.Config, m.b
	T, d := h.Rows, c.HeadDim
	H, Hkv := c.NumAttentionHeads, c.NumKeyValueHeads
	qkv := ws.qkv.RowRange(0, T).ColRange(0, (H+2*Hkv)*d)
	b.MatMul(qkv, h, ly.qkv)
	q, k, v := qkv.ColRange(0, H*d), qkv.ColRange(H*d, Hkv*d), qkv.ColRange((H+Hkv)*d, Hkv*d)
	m.qkNormRoPE(ly, qkv.ColRange(0, (H+Hkv)*d), pos)
	caches := m.sc.caches[:0]
	for _, p := range pass {
		caches = append(caches, p.req.State.(*State).kv[ly.kvIdx])
	}
	m.sc.caches = caches
	o := ws.o.RowRange(0, T)
	b.Attention(o, q, k, v, spans, caches, d, float32(1/math.Sqrt(float64(d))))
	b.MatMul(out, o, ly.dense)
}

// qkNormRoPE applies per-head RMSNorm (if configured) then RoPE to the q
// and k heads, adjacent in qk.
func (m *Model) qkNormRoPE(ly layer, qk backend.Tensor, pos []int32) {
	c, b := m.Config, m.b
	if ly.qkNorm == nil {
		b.ApplyRoPE(qk, c.HeadDim, m.rope, pos)
		return
	}
	backend.RMSNormRoPE(b, qk, ly.qkNorm, c.HeadDim, float32(c.RMSNormEps), m.rope, pos)
}

// ffn adds the mixer's output a to the residual x and normalises it into h
// with the layer's post-attention norm, then computes out = the dense
// SwiGLU of h, or the routed experts plus the shared experts (spec §6).
func (m *Model) ffn(ws *workspace, f *ffn, out, h, x, a backend.Tensor, norm backend.Weight) {
	b, T, c := m.b, h.Rows, m.Config
	eps := float32(c.RMSNormEps)
	if f.experts != nil {
		logits := ws.router.RowRange(0, T)
		r := backend.AddRMSNormRoute(b, h, x, a, norm, eps, logits, f.router, f.bias, backend.RouteParams{
			TopK: c.NumExpertsPerTok, Groups: c.NGroup, TopKGroups: c.TopkGroup,
			Sigmoid: c.ScoreFunction == "sigmoid", Normalize: c.NormTopkProb && c.NumExpertsPerTok > 1,
			Scale: float32(c.RoutedScalingFactor),
		})
		if f.gateUp != nil && f.down != nil {
			if sm, ok := b.(backend.SharedMoEer); ok && sm.MoEShared(out, h, r, f.experts, f.gateUp, f.down) {
				return
			}
		}
		b.MoE(out, h, r, f.experts)
		if f.down == nil {
			return
		}
		// shared experts are added to the routed output (a is free now)
		s := a
		m.swiglu(ws, f, s, h)
		b.Add(out, out, s)
		return
	}
	backend.AddRMSNorm(b, h, x, a, norm, eps)
	m.swiglu(ws, f, out, h)
}

// swiglu computes out = (silu(h·Wgᵀ) ⊙ h·Wuᵀ)·Wdᵀ.
func (m *Model) swiglu(ws *workspace, f *ffn, out, h backend.Tensor) {
	b, T := m.b, h.Rows
	_, I := f.down.Shape()
	gu := ws.ffnGU.RowRange(0, T).ColRange(0, 2*I)
	g, u := gu.ColRange(0, I), gu.ColRange(I, I)
	if f.gateUp != nil {
		b.MatMul(gu, h, f.gateUp)
	} else {
		b.MatMul(g, h, f.gate)
		b.MatMul(u, h, f.up)
	}
	b.SiLUMul(g, g, u)
	b.MatMul(out, g, f.down)
}

// Synthesize makes the state look as if it had consumed n tokens, with
// random KV cache rows and linear states, without running the model. It
// exists for benchmarks of decoding at long context, where a real prefill
// would dominate the run time; outputs computed from it are meaningless.
func (s *State) Synthesize(n int, seed uint64) {
	b := s.m.b
	s.reserve(n)
	r := rand.New(rand.NewPCG(seed, 1))
	fill := func(t backend.Tensor, scale float32) {
		buf := make([]float32, t.Rows*t.Cols)
		for i := range buf {
			buf[i] = (r.Float32()*2 - 1) * scale
		}
		b.Write(t, buf)
	}
	for _, t := range s.linear {
		fill(t, 0.1)
	}
	for _, kv := range s.kv {
		if n > 0 {
			fill(kv.K.RowRange(0, n), 1)
			fill(kv.V.RowRange(0, n), 1)
		}
	}
	s.pos = n
}
