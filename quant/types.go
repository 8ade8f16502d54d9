// Package quant implements llama.cpp/ggml-compatible tensor block formats
// (F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q6_K, Q8_K): conversion to and from
// float32, and the matrix-vector / matrix-matrix kernels used for inference.
//
// The bit layout of every block format is identical to ggml's, so tensors
// produced here can be stored in GGUF files read by llama.cpp and vice versa.
package quant

import (
	"fmt"
	"strings"
)

// Type is a ggml tensor element type. The numeric values are the ggml type ids
// (enum ggml_type) as stored in GGUF tensor infos.
type Type uint32

// ggml type ids (ggml/include/ggml.h, enum ggml_type).
const (
	F32     Type = 0  // 32-bit IEEE float
	F16     Type = 1  // 16-bit IEEE half float
	Q4_0    Type = 2  // 4-bit, blocks of 32 with one f16 scale
	Q4_1    Type = 3  // 4-bit with scale and min (layout known, not implemented)
	Q5_0    Type = 6  // not implemented
	Q5_1    Type = 7  // not implemented
	Q8_0    Type = 8  // 8-bit, blocks of 32 with one f16 scale
	Q8_1    Type = 9  // not implemented
	Q2_K    Type = 10 // not implemented
	Q3_K    Type = 11 // not implemented
	Q4_K    Type = 12 // 4-bit k-quant, super-blocks of 256
	Q5_K    Type = 13 // not implemented
	Q6_K    Type = 14 // 6-bit k-quant, super-blocks of 256
	Q8_K    Type = 15 // 8-bit k-quant (activation format), super-blocks of 256
	I8      Type = 24 // 8-bit integer
	I16     Type = 25 // 16-bit integer
	I32     Type = 26 // 32-bit integer
	I64     Type = 27 // 64-bit integer
	F64     Type = 28 // 64-bit float
	BF16    Type = 30 // bfloat16
	invalid Type = 0xffffffff
)

// QK is the number of elements in a Q4_0/Q8_0 block; QKK in a k-quant super-block.
const (
	QK  = 32
	QKK = 256
)

type typeInfo struct {
	name      string
	blockSize int // elements per block
	typeSize  int // bytes per block
	supported bool
}

var typeTable = map[Type]typeInfo{
	F32:  {"F32", 1, 4, true},
	F16:  {"F16", 1, 2, true},
	Q4_0: {"Q4_0", 32, 18, true},
	Q4_1: {"Q4_1", 32, 20, false},
	Q5_0: {"Q5_0", 32, 22, false},
	Q5_1: {"Q5_1", 32, 24, false},
	Q8_0: {"Q8_0", 32, 34, true},
	Q8_1: {"Q8_1", 32, 36, false},
	Q2_K: {"Q2_K", 256, 84, false},
	Q3_K: {"Q3_K", 256, 110, false},
	Q4_K: {"Q4_K", 256, 144, true},
	Q5_K: {"Q5_K", 256, 176, false},
	Q6_K: {"Q6_K", 256, 210, true},
	Q8_K: {"Q8_K", 256, 292, true},
	I8:   {"I8", 1, 1, false},
	I16:  {"I16", 1, 2, false},
	I32:  {"I32", 1, 4, false},
	I64:  {"I64", 1, 8, false},
	F64:  {"F64", 1, 8, false},
	BF16: {"BF16", 1, 2, true},
}

// String returns the ggml name of the type ("Q4_K", "BF16", ...), or
// "Type(n)" for unknown ids.
func (t Type) String() string {
	if ti, ok := typeTable[t]; ok {
		return ti.name
	}
	return fmt.Sprintf("Type(%d)", uint32(t))
}

// Known reports whether t is a ggml type whose block geometry is known
// (BlockSize/TypeSize are valid). Known types may still lack a
// Quantize/Dequantize implementation; see Supported.
func (t Type) Known() bool { _, ok := typeTable[t]; return ok }

// Supported reports whether Quantize and Dequantize implement t.
func (t Type) Supported() bool { return typeTable[t].supported }

// ParseType parses a ggml type name such as "q4_k" or "BF16" (case-insensitive).
func ParseType(s string) (Type, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	for t, ti := range typeTable {
		if ti.name == u {
			return t, nil
		}
	}
	return invalid, fmt.Errorf("quant: unknown type %q", s)
}

// BlockSize returns the number of elements per block of t (1 for plain
// float/int types), or 0 for unknown types.
func BlockSize(t Type) int { return typeTable[t].blockSize }

// TypeSize returns the number of bytes per block of t, or 0 for unknown types.
func TypeSize(t Type) int { return typeTable[t].typeSize }

// RowBytes returns the number of bytes of a row of k elements of type t.
// It panics if k is not a multiple of BlockSize(t) or t is unknown.
func RowBytes(t Type, k int) int {
	ti, ok := typeTable[t]
	if !ok {
		panic(fmt.Sprintf("quant: RowBytes of unknown type %v", t))
	}
	if k%ti.blockSize != 0 {
		panic(fmt.Sprintf("quant: RowBytes: %d elements is not a multiple of the %v block size %d", k, t, ti.blockSize))
	}
	return k / ti.blockSize * ti.typeSize
}

// TensorBytes returns the byte size of n elements of type t, and an error if n
// is not a multiple of the block size or t is unknown.
func TensorBytes(t Type, n int64) (int64, error) {
	ti, ok := typeTable[t]
	if !ok {
		return 0, fmt.Errorf("quant: unknown type %v", t)
	}
	if n < 0 || n%int64(ti.blockSize) != 0 {
		return 0, fmt.Errorf("quant: %d elements is not a multiple of the %v block size %d", n, t, ti.blockSize)
	}
	nb := n / int64(ti.blockSize)
	if nb > (1<<63-1)/int64(ti.typeSize) {
		return 0, fmt.Errorf("quant: %d elements of %v overflow the byte size", n, t)
	}
	return nb * int64(ti.typeSize), nil
}
