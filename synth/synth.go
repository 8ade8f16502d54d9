// Package synth writes random-weight checkpoints of any config, laid out as
// on the Hugging Face Hub, streaming to disk so that even a 33 GB model is
// never held in memory. They exist for benchmarks and tests.
package synth

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/ringo-ai/ringo/model/bailing"
	"github.com/ringo-ai/ringo/quant"
	"github.com/ringo-ai/ringo/safetensors"
)

// Options configure Write.
type Options struct {
	DType     safetensors.DType // BF16 (default) or F32
	Seed      uint64
	ShardSize int64 // bytes per shard (0: 4 GiB)
	// Progress, if set, is called after each tensor with bytes written so far and the total.
	Progress func(done, total int64)
}

// Write creates dir with config.json (a copy of cfgJSON), generation_config.json,
// model-XXXXX-of-YYYYY.safetensors shards and model.safetensors.index.json.
func Write(ctx context.Context, cfgJSON []byte, dir string, o Options) error {
	cfg, err := bailing.ParseConfig(cfgJSON)
	if err != nil {
		return err
	}
	if o.DType == safetensors.Invalid {
		o.DType = safetensors.BF16
	}
	if o.DType != safetensors.BF16 && o.DType != safetensors.F32 {
		return fmt.Errorf("synth: dtype %s not supported (bf16 or f32)", o.DType)
	}
	if o.ShardSize <= 0 {
		o.ShardSize = 4 << 30
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfgJSON, 0o644); err != nil {
		return err
	}
	gen := fmt.Sprintf("{\"eos_token_id\": %s}\n", idsJSON(cfg.EOSTokenID))
	if err := os.WriteFile(filepath.Join(dir, "generation_config.json"), []byte(gen), 0o644); err != nil {
		return err
	}
	// plan shards
	specs := bailing.Tensors(cfg)
	var shards [][]safetensors.TensorInfo
	var cur []safetensors.TensorInfo
	var curSize, total int64
	for _, s := range specs {
		ti := safetensors.TensorInfo{Name: s.Name, DType: o.DType, Shape: s.Shape}
		if s.F32 {
			ti.DType = safetensors.F32
		}
		if curSize > 0 && curSize+ti.Bytes() > o.ShardSize {
			shards = append(shards, cur)
			cur, curSize = nil, 0
		}
		cur = append(cur, ti)
		curSize += ti.Bytes()
		total += ti.Bytes()
	}
	shards = append(shards, cur)
	weightMap := map[string]string{}
	rng := newRNG(o.Seed)
	var done int64
	buf := make([]byte, 1<<20)
	for si, infos := range shards {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", si+1, len(shards))
		w, err := safetensors.Create(filepath.Join(dir, name), infos, map[string]string{"format": "pt"})
		if err != nil {
			return err
		}
		for _, ti := range infos {
			if err := ctx.Err(); err != nil {
				w.Close()
				return err
			}
			weightMap[ti.Name] = name
			gen := generator(ti, cfg)
			left := ti.Bytes()
			for left > 0 {
				n := min(int64(len(buf)), left)
				fill(buf[:n], ti.DType, gen, rng)
				if _, err := w.Write(buf[:n]); err != nil {
					w.Close()
					return fmt.Errorf("write %s: %w", ti.Name, err)
				}
				left -= n
			}
			done += ti.Bytes()
			if o.Progress != nil {
				o.Progress(done, total)
			}
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
	return safetensors.WriteIndex(filepath.Join(dir, "model.safetensors.index.json"), weightMap, total)
}

func idsJSON(ids []int32) string {
	if len(ids) == 0 {
		return "null"
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// dist is the distribution of one tensor's values: center + uniform(−scale, scale).
type dist struct{ center, scale float32 }

// generator picks value ranges that keep a random model's activations sane:
// norms near 1, matrices scaled by 1/√fan-in, small expert biases.
func generator(ti safetensors.TensorInfo, cfg *bailing.Config) dist {
	switch {
	case strings.HasSuffix(ti.Name, "norm.weight") || strings.HasSuffix(ti.Name, "layernorm.weight"):
		return dist{1, 0.1}
	case strings.HasSuffix(ti.Name, "expert_bias"):
		return dist{0, 0.01}
	case ti.Name == "model.word_embeddings.weight":
		return dist{0, 1}
	case len(ti.Shape) == 2:
		return dist{0, float32(math.Sqrt(3 / float64(ti.Shape[1])))}
	}
	return dist{0, 0.02}
}

// rng is xorshift64*: fast enough to fill tens of gigabytes.
type rng struct{ s uint64 }

func newRNG(seed uint64) *rng { return &rng{s: seed*0x9e3779b97f4a7c15 + 0x2545f4914f6cdd1d} }

func (r *rng) next() uint64 {
	r.s ^= r.s >> 12
	r.s ^= r.s << 25
	r.s ^= r.s >> 27
	return r.s * 0x2545f4914f6cdd1d
}

func fill(buf []byte, dt safetensors.DType, g dist, r *rng) {
	size := dt.Size()
	for i := 0; i+size <= len(buf); {
		x := r.next()
		for k := 0; k < 2 && i+size <= len(buf); k++ {
			u := float32(uint32(x>>(32*k))>>8)/float32(1<<24)*2 - 1
			v := g.center + g.scale*u
			if dt == safetensors.BF16 {
				binary.LittleEndian.PutUint16(buf[i:], quant.F32ToBF16(v))
			} else {
				binary.LittleEndian.PutUint32(buf[i:], math.Float32bits(v))
			}
			i += size
		}
	}
}
