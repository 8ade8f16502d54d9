// Package checkpoint opens a model directory laid out as on the Hugging Face
// Hub (config.json, generation_config.json, safetensors weights, single or
// sharded) and hands out weights by name with their shapes checked.
package checkpoint

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/quant"
	"github.com/ringo-ai/ringo/safetensors"
)

// Source hands out a model's weights by their Hugging Face name.
type Source interface {
	// Weight returns the named tensor, checked to have exactly shape
	// (one dimension for vectors, [out, in] for matrices).
	Weight(name string, shape ...int) (backend.HostWeight, error)
	// Has reports whether the named tensor exists.
	Has(name string) bool
	// Shape returns the stored shape of the named tensor, nil if missing.
	Shape(name string) []int
}

// GenerationConfig is the part of generation_config.json the engine uses.
type GenerationConfig struct {
	EOSTokenIDs []int32
	BOSTokenID  *int32
	PadTokenID  *int32
}

// Checkpoint is an open model directory.
type Checkpoint struct {
	Dir        string
	ConfigJSON []byte
	Generation GenerationConfig
	Tensors    *safetensors.Set
	blockRows  int
	blockCols  int
}

// Open reads dir/config.json and dir/generation_config.json (optional) and
// maps the safetensors weights.
func Open(dir string) (*Checkpoint, error) {
	cfg, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("open model %s: %w", dir, err)
	}
	c := &Checkpoint{Dir: dir, ConfigJSON: cfg, blockRows: 128, blockCols: 128}
	var q struct {
		Quant *struct {
			WeightBlockSize []int `json:"weight_block_size"`
		} `json:"quantization_config"`
	}
	if err := json.Unmarshal(cfg, &q); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "config.json"), err)
	}
	if q.Quant != nil && len(q.Quant.WeightBlockSize) == 2 {
		c.blockRows, c.blockCols = q.Quant.WeightBlockSize[0], q.Quant.WeightBlockSize[1]
		if c.blockRows <= 0 || c.blockCols <= 0 {
			return nil, fmt.Errorf("%s: quantization_config.weight_block_size %v must be positive", filepath.Join(dir, "config.json"), q.Quant.WeightBlockSize)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "generation_config.json")); err == nil {
		g, err := ParseGenerationConfig(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "generation_config.json"), err)
		}
		c.Generation = g
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	c.Tensors, err = safetensors.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ParseGenerationConfig reads eos/bos/pad ids from generation_config.json.
func ParseGenerationConfig(b []byte) (GenerationConfig, error) {
	var raw struct {
		EOS json.RawMessage `json:"eos_token_id"`
		BOS *int32          `json:"bos_token_id"`
		Pad *int32          `json:"pad_token_id"`
	}
	var g GenerationConfig
	if err := json.Unmarshal(b, &raw); err != nil {
		return g, err
	}
	g.BOSTokenID, g.PadTokenID = raw.BOS, raw.Pad
	if len(raw.EOS) > 0 && string(raw.EOS) != "null" {
		var one int32
		if err := json.Unmarshal(raw.EOS, &one); err == nil {
			g.EOSTokenIDs = []int32{one}
		} else if err := json.Unmarshal(raw.EOS, &g.EOSTokenIDs); err != nil {
			return g, fmt.Errorf("eos_token_id: %w", err)
		}
	}
	return g, nil
}

// Close unmaps the weights.
func (c *Checkpoint) Close() error { return c.Tensors.Close() }

// Has implements Source.
func (c *Checkpoint) Has(name string) bool { return c.Tensors.Tensor(name) != nil }

// Weight implements Source.
func (c *Checkpoint) Weight(name string, shape ...int) (backend.HostWeight, error) {
	t := c.Tensors.Tensor(name)
	if t == nil {
		return backend.HostWeight{}, fmt.Errorf("%s: tensor %s is missing", c.Dir, name)
	}
	if !slices.Equal(t.Shape, shape) {
		return backend.HostWeight{}, fmt.Errorf("%s: tensor %s has shape %v, want %v", t.File, name, t.Shape, shape)
	}
	hw := backend.HostWeight{Name: name, Data: t.Data, Rows: 1, Cols: shape[0]}
	if len(shape) == 2 {
		hw.Rows, hw.Cols = shape[0], shape[1]
	}
	switch t.DType {
	case safetensors.F32:
		hw.Kind = backend.F32
	case safetensors.F16:
		hw.Kind = backend.F16
	case safetensors.BF16:
		hw.Kind = backend.BF16
	case safetensors.F8E4M3:
		hw.Kind = backend.F8E4M3
		sname := name + "_scale_inv"
		st := c.Tensors.Tensor(sname)
		if st == nil {
			return backend.HostWeight{}, fmt.Errorf("%s: FP8 tensor %s has no %s", t.File, name, sname)
		}
		hw.BlockRows, hw.BlockCols = c.blockRows, c.blockCols
		want := []int{(hw.Rows + c.blockRows - 1) / c.blockRows, (hw.Cols + c.blockCols - 1) / c.blockCols}
		if !slices.Equal(st.Shape, want) {
			return backend.HostWeight{}, fmt.Errorf("%s: tensor %s has shape %v, want %v for %dx%d blocks", st.File, sname, st.Shape, want, c.blockRows, c.blockCols)
		}
		s, err := floats(st)
		if err != nil {
			return backend.HostWeight{}, err
		}
		hw.Scale = s
	default:
		return backend.HostWeight{}, fmt.Errorf("%s: tensor %s has unsupported dtype %s", t.File, name, t.DType)
	}
	return hw, nil
}

// Floats returns a tensor's values as float32 (F32, F16 or BF16).
func floats(t *safetensors.Tensor) ([]float32, error) {
	n := t.Elems()
	out := make([]float32, n)
	switch t.DType {
	case safetensors.F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
		}
	case safetensors.BF16:
		for i := range out {
			out[i] = quant.BF16ToF32(binary.LittleEndian.Uint16(t.Data[2*i:]))
		}
	case safetensors.F16:
		for i := range out {
			out[i] = quant.F16ToF32(binary.LittleEndian.Uint16(t.Data[2*i:]))
		}
	default:
		return nil, fmt.Errorf("%s: tensor %s: dtype %s is not a float type", t.File, t.Name, t.DType)
	}
	return out, nil
}

// Shape returns the stored shape of a tensor, or nil if it is missing.
func (c *Checkpoint) Shape(name string) []int {
	if t := c.Tensors.Tensor(name); t != nil {
		return t.Shape
	}
	return nil
}

// Skipped reports whether a checkpoint tensor is deliberately not used by
// the engine (multi-token-prediction heads, rotary caches, decay slopes).
func Skipped(name string) bool {
	return strings.HasPrefix(name, "model.mtp.") || strings.Contains(name, "inv_freq") || strings.Contains(name, "slope")
}
