// Package gguf reads and writes GGUF v3 files (the llama.cpp model format):
// a header, typed metadata key/value pairs, tensor descriptors and an aligned
// data section. The reader memory-maps the file; the writer streams tensor
// data so that a model never has to be held in memory. The package also maps
// Hugging Face tensor names of the Ling 2.0 / Ring-linear 2.0 model family to
// GGUF names and converts model hyper-parameters to and from GGUF metadata.
package gguf

import (
	"fmt"

	"github.com/ringo-ai/ringo/quant"
)

// Magic is the little-endian uint32 "GGUF" at the start of every file.
const Magic = 0x46554747

// Version is the GGUF version this package writes. Versions 2 and 3 are read
// (they share the 64-bit count layout; v3 only adds big-endian support, which
// is not handled).
const Version = 3

// DefaultAlignment is the data alignment used when general.alignment is absent.
const DefaultAlignment = 32

// MaxDims is the maximum number of tensor dimensions (GGML_MAX_DIMS).
const MaxDims = 4

// KeyAlignment is the metadata key that overrides the data alignment.
const KeyAlignment = "general.alignment"

// ValueType is the type tag of a metadata value (enum gguf_type).
type ValueType uint32

// Metadata value types.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"}

// String returns the GGUF name of the value type.
func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("ValueType(%d)", uint32(t))
}

// size returns the encoded size of a fixed-size scalar type, or 0.
func (t ValueType) size() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// KV is one metadata entry. Value holds the Go representation of the GGUF
// value:
//
//	uint8 int8 uint16 int16 uint32 int32 uint64 int64 float32 float64 bool string
//
// or an array: a slice of one of those ([]uint32, []string, ...), or []any
// for arrays of arrays (each element itself a slice). An empty array read from
// a file keeps its element type (e.g. []int32{}).
type KV struct {
	Key   string
	Value any
}

// TensorInfo describes one tensor of a GGUF file.
type TensorInfo struct {
	Name string
	Type quant.Type
	// Shape in ggml order: Shape[0] is the contiguous (fastest varying)
	// dimension, e.g. a PyTorch Linear weight [out, in] has Shape {in, out}.
	Shape []int64
	// Offset of the data relative to the start of the data section.
	Offset int64
	// Data is the tensor's bytes (a slice of the file mapping when read; nil
	// while writing).
	Data []byte
}

// NumElements returns the product of the dimensions.
func (t *TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Size returns the number of data bytes of the tensor.
func (t *TensorInfo) Size() int64 {
	s, _ := quant.TensorBytes(t.Type, t.NumElements())
	return s
}

// Rows returns the number of rows (elements / Shape[0]).
func (t *TensorInfo) Rows() int64 {
	if len(t.Shape) == 0 || t.Shape[0] == 0 {
		return 0
	}
	return t.NumElements() / t.Shape[0]
}
