// Package synth writes random-weight checkpoints of any config, laid out as
// on the Hugging Face Hub, streaming to disk so that even a 33 GB model is
// never held in memory. They exist for benchmarks and tests.
package synth

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/ringo-ai/ringo/ggufmodel"
	"github.com/ringo-ai/ringo/model/bailing"
	"github.com/ringo-ai/ringo/quant"
	"github.com/ringo-ai/ringo/safetensors"
)

// Options configure Write.
type Options struct {
	// DType is BF16 (default), F32, or F8E4M3: then the bulk matrices (those
	// ggufmodel.RoleOf calls RoleMatrix) are FP8 with a float32
	// weight_scale_inv per fp8Block×fp8Block block, as in the Hub's FP8
	// checkpoints, and everything else is BF16.
	DType     safetensors.DType
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
	fp8 := o.DType == safetensors.F8E4M3
	if o.DType != safetensors.BF16 && o.DType != safetensors.F32 && !fp8 {
		return fmt.Errorf("synth: dtype %s not supported (bf16, f32 or f8_e4m3)", o.DType)
	}
	if fp8 {
		if cfgJSON, err = withFP8Config(cfgJSON); err != nil {
			return err
		}
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
		var scale *safetensors.TensorInfo
		switch {
		case s.F32:
			ti.DType = safetensors.F32
		case fp8 && len(s.Shape) == 2 && ggufmodel.RoleOf(s.Name, s.Shape[0], cfg.TieWordEmbeddings) == ggufmodel.RoleMatrix:
			scale = &safetensors.TensorInfo{Name: s.Name + "_scale_inv", DType: safetensors.F32,
				Shape: []int{(s.Shape[0] + fp8Block - 1) / fp8Block, (s.Shape[1] + fp8Block - 1) / fp8Block}}
		case fp8:
			ti.DType = safetensors.BF16
		}
		size := ti.Bytes()
		if scale != nil {
			size += scale.Bytes()
		}
		if curSize > 0 && curSize+size > o.ShardSize {
			shards = append(shards, cur)
			cur, curSize = nil, 0
		}
		cur = append(cur, ti)
		if scale != nil {
			cur = append(cur, *scale)
		}
		curSize += size
		total += size
	}
	shards = append(shards, cur)
	weightMap := map[string]string{}
	var done int64
	workers := max(1, runtime.GOMAXPROCS(0))
	// two sets of buffers: one filled while the other is written
	var bufs [2][][]byte
	for i := range bufs {
		bufs[i] = make([][]byte, workers)
		for k := range bufs[i] {
			bufs[i][k] = make([]byte, chunkSize)
		}
	}
	// a chunk is chunkSize bytes (or a tensor's last bytes) from its own
	// generator, so the bytes do not depend on the number of workers
	type chunk struct {
		dt   safetensors.DType
		gen  dist
		rng  *rng
		size int64
	}
	tensor := uint64(0)
	for si, infos := range shards {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", si+1, len(shards))
		w, err := safetensors.Create(filepath.Join(dir, name), infos, map[string]string{"format": "pt"})
		if err != nil {
			return err
		}
		var chunks []chunk
		for _, ti := range infos {
			weightMap[ti.Name] = name
			gen := generator(ti, cfg)
			if strings.HasSuffix(ti.Name, "_scale_inv") {
				// FP8 quants span ±448 (fillFP8): scale them to the matrix's range
				m := generator(safetensors.TensorInfo{Name: strings.TrimSuffix(ti.Name, "_scale_inv"), Shape: []int{0, ti.Shape[1] * fp8Block}}, cfg)
				gen = dist{m.scale / 448, 0}
			}
			size := ti.Bytes()
			for c := int64(0); c*chunkSize < size; c++ {
				chunks = append(chunks, chunk{ti.DType, gen, chunkRNG(o.Seed, tensor, uint64(c)), min(chunkSize, size-c*chunkSize)})
			}
			tensor++
		}
		// one chunk per worker at a time (many tensors are a few chunks),
		// filled in parallel, then written in order while the next batch
		// is filled
		var werr error
		written := make(chan struct{}, 1)
		written <- struct{}{}
		for c0, set := 0, 0; c0 < len(chunks); c0, set = c0+workers, 1-set {
			if err := ctx.Err(); err != nil {
				<-written
				w.Close()
				return err
			}
			batch := chunks[c0:min(c0+workers, len(chunks))]
			var wg sync.WaitGroup
			for k, c := range batch {
				wg.Go(func() { fill(bufs[set][k][:c.size], c.dt, c.gen, c.rng) })
			}
			wg.Wait()
			<-written // the previous batch, from the other set
			if werr != nil {
				break
			}
			go func() {
				for k, c := range batch {
					if _, err := w.Write(bufs[set][k][:c.size]); err != nil {
						werr = fmt.Errorf("write %s: %w", name, err)
						break
					}
				}
				written <- struct{}{}
			}()
			for _, c := range batch {
				done += c.size
			}
			if o.Progress != nil {
				o.Progress(done, total)
			}
		}
		<-written
		if werr != nil {
			w.Close()
			return werr
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

// chunkSize is the unit of parallel generation: every chunkSize bytes of a
// tensor come from their own generator (a variable for tests).
var chunkSize int64 = 1 << 20

// chunkRNG returns the generator of chunk c of the tensor-th tensor: the
// three numbers mixed by splitmix64 steps into a nonzero xorshift state.
func chunkRNG(seed, tensor, c uint64) *rng {
	s := mix64(mix64(mix64(seed)^tensor) ^ c)
	if s == 0 {
		s = 1
	}
	return &rng{s: s}
}

// mix64 is splitmix64's finalizer.
func mix64(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

func (r *rng) next() uint64 {
	r.s ^= r.s >> 12
	r.s ^= r.s << 25
	r.s ^= r.s >> 27
	return r.s * 0x2545f4914f6cdd1d
}

// fp8Block is the block size of synthetic FP8 weights (rows and columns), that
// of the Hub's FP8 checkpoints.
const fp8Block = 128

// withFP8Config adds the quantization_config of a block-scaled FP8
// checkpoint to a config.json.
func withFP8Config(cfgJSON []byte) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(cfgJSON, &m); err != nil {
		return nil, fmt.Errorf("synth: config: %w", err)
	}
	m["quantization_config"] = map[string]any{"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
		"weight_block_size": []int{fp8Block, fp8Block}}
	return json.MarshalIndent(m, "", "  ")
}

func fill(buf []byte, dt safetensors.DType, g dist, r *rng) {
	if dt == safetensors.F8E4M3 {
		fillFP8(buf, r)
		return
	}
	if dt == safetensors.BF16 {
		// 16 random bits per value are more than a BF16 mantissa holds;
		// three values from the upper 48 bits (xorshift64*'s low bits are
		// its weakest)
		for i := 0; i+2 <= len(buf); {
			x := r.next()
			for k := 1; k < 4 && i+2 <= len(buf); k++ {
				u := float32(uint16(x>>(16*k)))/float32(1<<16)*2 - 1
				binary.LittleEndian.PutUint16(buf[i:], quant.F32ToBF16(g.center+g.scale*u))
				i += 2
			}
		}
		return
	}
	size := dt.Size()
	for i := 0; i+size <= len(buf); {
		x := r.next()
		for k := 0; k < 2 && i+size <= len(buf); k++ {
			u := float32(uint32(x>>(32*k))>>8)/float32(1<<24)*2 - 1
			binary.LittleEndian.PutUint32(buf[i:], math.Float32bits(g.center+g.scale*u))
			i += size
		}
	}
}

// fillFP8 fills buf with random E4M3 values of either sign whose magnitudes
// lie between 16 and 416 (exponents 11..15, never NaN): 6 values per random
// number (its upper 48 bits, as fill), so that the ~100 GB of a large FP8
// model are written quickly.
func fillFP8(buf []byte, r *rng) {
	for i := 0; i < len(buf); {
		x := r.next()
		for k := 2; k < 8 && i < len(buf); k++ {
			b := byte(x >> (8 * k))
			e := 0x58 + (b&0x3f)%0x26 // exponent and mantissa bits 0x58..0x7d
			buf[i] = b&0x80 | e
			i++
		}
	}
}
