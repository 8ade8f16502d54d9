package checkpoint_test

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ringo-ai/ringo/backend/cpu"
	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/model/bailing"
	"github.com/ringo-ai/ringo/quant"
	"github.com/ringo-ai/ringo/safetensors"
)

// toFP8 rewrites every shard of dir so that the 2-D projection weights are
// F8_E4M3 with block scales (DeepSeek-style weight_scale_inv), keeping the
// router, embeddings and lm_head in BF16, as FP8 releases do.
// With simulate set it writes, instead, BF16 weights holding exactly the
// values the FP8 weights decode to.
func toFP8(t *testing.T, dir string, block int, simulate bool) {
	t.Helper()
	for _, shard := range []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} {
		p := filepath.Join(dir, shard)
		f, err := safetensors.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		var infos []safetensors.TensorInfo
		var datas [][]byte
		for _, n := range f.Names() {
			tt := f.Tensor(n)
			keep := len(tt.Shape) != 2 || strings.Contains(n, "mlp.gate.weight") || strings.Contains(n, "word_embeddings") || n == "lm_head.weight"
			if keep {
				infos = append(infos, safetensors.TensorInfo{Name: n, DType: tt.DType, Shape: tt.Shape})
				datas = append(datas, append([]byte(nil), tt.Data...))
				continue
			}
			R, C := tt.Shape[0], tt.Shape[1]
			sr, sc := (R+block-1)/block, (C+block-1)/block
			vals := make([]float32, R*C)
			for i := range vals {
				vals[i] = quant.BF16ToF32(binary.LittleEndian.Uint16(tt.Data[2*i:]))
			}
			scales := make([]float32, sr*sc)
			for br := 0; br < sr; br++ {
				for bc := 0; bc < sc; bc++ {
					var amax float32
					for r := br * block; r < min(R, (br+1)*block); r++ {
						for c := bc * block; c < min(C, (bc+1)*block); c++ {
							amax = max(amax, float32(math.Abs(float64(vals[r*C+c]))))
						}
					}
					scales[br*sc+bc] = max(amax/448, 1e-12)
				}
			}
			q := make([]byte, R*C)
			for r := 0; r < R; r++ {
				for c := 0; c < C; c++ {
					q[r*C+c] = safetensors.F32ToF8E4M3(vals[r*C+c] / scales[(r/block)*sc+c/block])
				}
			}
			if simulate {
				b := make([]byte, 2*R*C)
				for r := 0; r < R; r++ {
					for c := 0; c < C; c++ {
						v := safetensors.F8E4M3ToF32(q[r*C+c]) * scales[(r/block)*sc+c/block]
						binary.LittleEndian.PutUint16(b[2*(r*C+c):], quant.F32ToBF16(v))
					}
				}
				infos = append(infos, safetensors.TensorInfo{Name: n, DType: safetensors.BF16, Shape: tt.Shape})
				datas = append(datas, b)
				continue
			}
			sb := make([]byte, 4*len(scales))
			for i, s := range scales {
				binary.LittleEndian.PutUint32(sb[4*i:], math.Float32bits(s))
			}
			infos = append(infos, safetensors.TensorInfo{Name: n, DType: safetensors.F8E4M3, Shape: tt.Shape},
				safetensors.TensorInfo{Name: n + "_scale_inv", DType: safetensors.F32, Shape: []int{sr, sc}})
			datas = append(datas, q, sb)
		}
		f.Close()
		w, err := safetensors.Create(p, infos, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range datas {
			w.Write(d)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(filepath.Join(dir, "model.safetensors.index.json")) // shards hold new tensors
}

func promptLogits(t *testing.T, dir string, ids []int32) ([]float32, int) {
	t.Helper()
	ck, err := checkpoint.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	m, err := bailing.Load(ck.ConfigJSON, ck.Generation, ck, cpu.New(1), bailing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := &model.Request{State: m.NewState(), Tokens: ids, All: true}
	if err := m.Forward(context.Background(), []*model.Request{r}); err != nil {
		t.Fatal(err)
	}
	return r.Logits, m.Info().VocabSize
}

// TestFP8Checkpoint loads an FP8 (block-scaled) version of the fixture and
// checks it exactly against a BF16 checkpoint holding the values the FP8
// weights decode to; agreement with the original BF16 model is logged.
func TestFP8Checkpoint(t *testing.T) {
	dir := copyFixture(t)
	editConfig(t, dir, func(m map[string]any) {
		m["quantization_config"] = map[string]any{"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": []int{32, 32}}
	})
	toFP8(t, dir, 32, false)
	sim := copyFixture(t)
	toFP8(t, sim, 32, true)
	ids := make([]int32, 64)
	for i := range ids {
		ids[i] = int32((i*37 + 11) % 512)
	}
	orig, V := promptLogits(t, fixture, ids)
	ref, _ := promptLogits(t, sim, ids)
	got, _ := promptLogits(t, dir, ids)
	for i := range ref {
		if got[i] != ref[i] {
			t.Fatalf("FP8 checkpoint logit %d = %v, simulated BF16 %v", i, got[i], ref[i])
		}
	}
	ref = orig
	agree, kl := 0, 0.0
	for r := 0; r < len(ids); r++ {
		a, b := ref[r*V:(r+1)*V], got[r*V:(r+1)*V]
		if argmax(a) == argmax(b) {
			agree++
		}
		kl += klDiv(a, b)
	}
	kl /= float64(len(ids))
	t.Logf("FP8 (E4M3, 32x32 blocks) vs original BF16 on the random tiny model: top-1 agreement %d/%d, mean KL %.2g", agree, len(ids), kl)
	// missing scale tensor is reported by name
	ck, err := checkpoint.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if _, err := ck.Weight("model.layers.0.attention.dense.weight_scale_inv_missing", 1); err == nil {
		t.Fatal("missing tensor accepted")
	}
}

func argmax(v []float32) int {
	b := 0
	for i, x := range v {
		if x > v[b] {
			b = i
		}
	}
	return b
}

// klDiv returns KL(softmax(p) ‖ softmax(q)).
func klDiv(p, q []float32) float64 {
	lse := func(x []float32) float64 {
		m := math.Inf(-1)
		for _, v := range x {
			m = math.Max(m, float64(v))
		}
		var s float64
		for _, v := range x {
			s += math.Exp(float64(v) - m)
		}
		return m + math.Log(s)
	}
	lp, lq := lse(p), lse(q)
	var kl float64
	for i := range p {
		a := float64(p[i]) - lp
		kl += math.Exp(a) * (a - (float64(q[i]) - lq))
	}
	return kl
}
