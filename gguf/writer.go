package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/ringo-ai/ringo/internal/hugepage"
	"github.com/ringo-ai/ringo/quant"
)

// Writer writes a GGUF v3 file in two phases:
//
//  1. AddKV / AddTensorInfo declare metadata and tensors (name, type, shape);
//  2. WriteTensorData / WriteTensorFrom stream each tensor's bytes.
//
// The header (including all tensor infos with their offsets) is written at
// the first data write (or explicitly with WriteHeader), so every tensor must
// be declared before any data is written. Tensors must be written in
// declaration order unless the destination is an io.WriteSeeker, in which
// case any order is accepted. Close pads the file, checks that every tensor
// was written and flushes (and closes the file when created with Create).
type Writer struct {
	w      io.Writer
	bw     *hugepage.Writer
	ws     io.WriteSeeker // non-nil if seeking is possible
	closer io.Closer
	name   string

	align   int
	kvs     []KV
	kvIndex map[string]int
	tensors []*TensorInfo
	tIndex  map[string]int
	sizes   []int64
	written []bool

	headerDone bool
	base       int64 // absolute offset of the data section (relative to start of output)
	pos        int64 // current absolute write position
	dataEnd    int64 // end of data section (relative to base)
	err        error
}

// NewWriter returns a Writer writing to w. If w is an io.WriteSeeker
// positioned at its start, tensors may be written in any order.
func NewWriter(w io.Writer) *Writer {
	gw := &Writer{
		w: w, bw: hugepage.NewWriter(w, 0), name: "gguf writer",
		align: DefaultAlignment, kvIndex: map[string]int{}, tIndex: map[string]int{},
	}
	if ws, ok := w.(io.WriteSeeker); ok {
		gw.ws = ws
	}
	return gw
}

// Create creates (truncates) the file at path and returns a Writer for it;
// Close closes the file.
func Create(path string) (*Writer, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: create: %w", err)
	}
	w := NewWriter(f)
	w.closer = f
	w.name = path
	return w, nil
}

func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return err
}

// SetAlignment sets the data alignment (a power of two); it is stored as
// general.alignment when different from the default. Must be called before
// the header is written.
func (w *Writer) SetAlignment(n int) error {
	if w.headerDone {
		return fmt.Errorf("gguf: %s: SetAlignment after header written", w.name)
	}
	if n <= 0 || n&(n-1) != 0 {
		return fmt.Errorf("gguf: %s: alignment %d is not a power of two", w.name, n)
	}
	w.align = n
	if n != DefaultAlignment {
		return w.AddKV(KeyAlignment, uint32(n))
	}
	return nil
}

// AddKV adds (or replaces) a metadata entry. value must be one of the Go types
// listed for KV.Value; plain int is stored as int32 if it fits, else int64,
// and []int likewise.
func (w *Writer) AddKV(key string, value any) error {
	if w.headerDone {
		return fmt.Errorf("gguf: %s: AddKV(%q) after header written", w.name, key)
	}
	v, err := normalize(value)
	if err != nil {
		return fmt.Errorf("gguf: %s: metadata %q: %w", w.name, key, err)
	}
	if key == KeyAlignment {
		a, ok := toInt(v)
		if !ok || a <= 0 || a&(a-1) != 0 {
			return fmt.Errorf("gguf: %s: invalid %s %v", w.name, key, value)
		}
		w.align = int(a)
	}
	if i, ok := w.kvIndex[key]; ok {
		w.kvs[i].Value = v
		return nil
	}
	w.kvIndex[key] = len(w.kvs)
	w.kvs = append(w.kvs, KV{key, v})
	return nil
}

// AddKVs adds several entries (see AddKV).
func (w *Writer) AddKVs(kvs []KV) error {
	for _, kv := range kvs {
		if err := w.AddKV(kv.Key, kv.Value); err != nil {
			return err
		}
	}
	return nil
}

func normalize(v any) (any, error) {
	switch x := v.(type) {
	case int:
		if x >= math.MinInt32 && x <= math.MaxInt32 {
			return int32(x), nil
		}
		return int64(x), nil
	case []int:
		out := make([]int32, len(x))
		for i, e := range x {
			if e < math.MinInt32 || e > math.MaxInt32 {
				o64 := make([]int64, len(x))
				for j, f := range x {
					o64[j] = int64(f)
				}
				return o64, nil
			}
			out[i] = int32(e)
		}
		return out, nil
	case uint8, int8, uint16, int16, uint32, int32, uint64, int64, float32, float64, bool, string,
		[]uint8, []int8, []uint16, []int16, []uint32, []int32, []uint64, []int64, []float32, []float64, []bool, []string:
		return v, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			n, err := normalize(e)
			if err != nil {
				return nil, err
			}
			if valueType(n) != TypeArray {
				return nil, fmt.Errorf("[]any elements must be arrays, got %T", e)
			}
			out[i] = n
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported value type %T", v)
}

// AddTensorInfo declares a tensor. shape is in ggml order (shape[0] is the
// contiguous dimension); shape[0] must be a multiple of the type's block size.
func (w *Writer) AddTensorInfo(name string, typ quant.Type, shape []int64) error {
	if w.headerDone {
		return fmt.Errorf("gguf: %s: AddTensorInfo(%q) after header written", w.name, name)
	}
	if _, dup := w.tIndex[name]; dup {
		return fmt.Errorf("gguf: %s: duplicate tensor %q", w.name, name)
	}
	if len(shape) > MaxDims {
		return fmt.Errorf("gguf: %s: tensor %q has %d dimensions (max %d)", w.name, name, len(shape), MaxDims)
	}
	if !typ.Known() {
		return fmt.Errorf("gguf: %s: tensor %q: unknown type %v", w.name, name, typ)
	}
	n := int64(1)
	for _, d := range shape {
		if d < 0 || (d > 0 && n > math.MaxInt64/d) {
			return fmt.Errorf("gguf: %s: tensor %q: bad shape %v", w.name, name, shape)
		}
		n *= d
	}
	if len(shape) > 0 && shape[0]%int64(quant.BlockSize(typ)) != 0 {
		return fmt.Errorf("gguf: %s: tensor %q: row length %d not a multiple of the %v block size %d", w.name, name, shape[0], typ, quant.BlockSize(typ))
	}
	size, err := quant.TensorBytes(typ, n)
	if err != nil {
		return fmt.Errorf("gguf: %s: tensor %q: %w", w.name, name, err)
	}
	w.tIndex[name] = len(w.tensors)
	w.tensors = append(w.tensors, &TensorInfo{Name: name, Type: typ, Shape: append([]int64(nil), shape...)})
	w.sizes = append(w.sizes, size)
	w.written = append(w.written, false)
	return nil
}

func (w *Writer) padTo(n int64) int64 { a := int64(w.align); return (n + a - 1) / a * a }

// WriteHeader writes the header, metadata and tensor infos. It is called
// automatically by the first tensor data write or by Close.
func (w *Writer) WriteHeader() error {
	if w.err != nil {
		return w.err
	}
	if w.headerDone {
		return nil
	}
	w.headerDone = true
	var off int64
	for i, t := range w.tensors {
		t.Offset = off
		off = w.padTo(off + w.sizes[i])
	}
	w.dataEnd = off
	e := &encoder{w: w.bw}
	e.u32(Magic)
	e.u32(Version)
	e.u64(uint64(len(w.tensors)))
	e.u64(uint64(len(w.kvs)))
	for _, kv := range w.kvs {
		e.str(kv.Key)
		t := valueType(kv.Value)
		e.u32(uint32(t))
		e.value(kv.Value)
	}
	for _, t := range w.tensors {
		e.str(t.Name)
		e.u32(uint32(len(t.Shape)))
		for _, d := range t.Shape {
			e.u64(uint64(d))
		}
		e.u32(uint32(t.Type))
		e.u64(uint64(t.Offset))
	}
	if e.err != nil {
		return w.fail(fmt.Errorf("gguf: %s: writing header: %w", w.name, e.err))
	}
	w.base = w.padTo(e.n)
	if err := w.zeros(w.base - e.n); err != nil {
		return err
	}
	w.pos = w.base
	return nil
}

func (w *Writer) zeros(n int64) error {
	var z [512]byte
	for n > 0 {
		k := min(n, int64(len(z)))
		if _, err := w.bw.Write(z[:k]); err != nil {
			return w.fail(fmt.Errorf("gguf: %s: write: %w", w.name, err))
		}
		n -= k
	}
	return nil
}

// seekTo positions the output at absolute offset abs (flushing buffers).
func (w *Writer) seekTo(abs int64) error {
	if abs == w.pos {
		return nil
	}
	if w.ws == nil {
		return fmt.Errorf("gguf: %s: out-of-order tensor write needs an io.WriteSeeker", w.name)
	}
	if err := w.bw.Flush(); err != nil {
		return w.fail(fmt.Errorf("gguf: %s: write: %w", w.name, err))
	}
	if _, err := w.ws.Seek(abs, io.SeekStart); err != nil {
		return w.fail(fmt.Errorf("gguf: %s: seek: %w", w.name, err))
	}
	w.bw.Seeked(abs)
	w.pos = abs
	return nil
}

func (w *Writer) begin(name string) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if err := w.WriteHeader(); err != nil {
		return 0, err
	}
	i, ok := w.tIndex[name]
	if !ok {
		return 0, fmt.Errorf("gguf: %s: tensor %q was not declared", w.name, name)
	}
	if w.written[i] {
		return 0, fmt.Errorf("gguf: %s: tensor %q written twice", w.name, name)
	}
	if err := w.seekTo(w.base + w.tensors[i].Offset); err != nil {
		return 0, fmt.Errorf("%w (writing %q, next expected %q)", err, name, w.expected())
	}
	return i, nil
}

func (w *Writer) expected() string {
	for i, done := range w.written {
		if !done {
			return w.tensors[i].Name
		}
	}
	return ""
}

func (w *Writer) finish(i int) error {
	t := w.tensors[i]
	w.pos = w.base + t.Offset + w.sizes[i]
	end := w.base + w.padTo(t.Offset+w.sizes[i])
	if err := w.zeros(end - w.pos); err != nil {
		return err
	}
	w.pos = end
	w.written[i] = true
	return nil
}

// WriteTensorData writes the complete data of a declared tensor; len(data)
// must equal the tensor's size.
func (w *Writer) WriteTensorData(name string, data []byte) error {
	i, err := w.begin(name)
	if err != nil {
		return err
	}
	if int64(len(data)) != w.sizes[i] {
		return fmt.Errorf("gguf: %s: tensor %q: got %d bytes, want %d", w.name, name, len(data), w.sizes[i])
	}
	if _, err := w.bw.Write(data); err != nil {
		return w.fail(fmt.Errorf("gguf: %s: tensor %q: %w", w.name, name, err))
	}
	return w.finish(i)
}

// WriteTensorFrom streams exactly the tensor's size in bytes from r (so a
// large tensor can be produced chunk by chunk, e.g. via io.Pipe).
func (w *Writer) WriteTensorFrom(name string, r io.Reader) error {
	i, err := w.begin(name)
	if err != nil {
		return err
	}
	n, err := io.CopyN(w.bw, r, w.sizes[i])
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("source ended after %d of %d bytes", n, w.sizes[i])
		}
		return w.fail(fmt.Errorf("gguf: %s: tensor %q: %w", w.name, name, err))
	}
	return w.finish(i)
}

// Close writes the header if needed, checks that all tensors were written,
// flushes, and closes the file if the Writer was made by Create.
func (w *Writer) Close() error {
	err := w.WriteHeader()
	if err == nil {
		if missing := w.expected(); missing != "" && len(w.tensors) > 0 {
			err = fmt.Errorf("gguf: %s: tensor %q was declared but never written", w.name, missing)
		}
	}
	if err == nil && w.pos != w.base+w.dataEnd {
		err = w.seekTo(w.base + w.dataEnd)
	}
	if err == nil {
		if ferr := w.bw.Flush(); ferr != nil {
			err = fmt.Errorf("gguf: %s: flush: %w", w.name, ferr)
		}
	}
	if w.closer != nil {
		if cerr := w.closer.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("gguf: %s: close: %w", w.name, cerr)
		}
		w.closer = nil
	}
	return err
}

// ---- encoding

type encoder struct {
	w   *hugepage.Writer
	n   int64
	err error
	buf [8]byte
}

func (e *encoder) write(b []byte) {
	if e.err != nil {
		return
	}
	n, err := e.w.Write(b)
	e.n += int64(n)
	e.err = err
}

func (e *encoder) u8(v uint8) { e.buf[0] = v; e.write(e.buf[:1]) }
func (e *encoder) u16(v uint16) {
	binary.LittleEndian.PutUint16(e.buf[:], v)
	e.write(e.buf[:2])
}
func (e *encoder) u32(v uint32) {
	binary.LittleEndian.PutUint32(e.buf[:], v)
	e.write(e.buf[:4])
}
func (e *encoder) u64(v uint64) {
	binary.LittleEndian.PutUint64(e.buf[:], v)
	e.write(e.buf[:8])
}
func (e *encoder) str(s string) {
	e.u64(uint64(len(s)))
	if e.err == nil {
		n, err := io.WriteString(e.w, s)
		e.n += int64(n)
		e.err = err
	}
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// valueType returns the GGUF type of a normalized Go value.
func valueType(v any) ValueType {
	switch v.(type) {
	case uint8:
		return TypeUint8
	case int8:
		return TypeInt8
	case uint16:
		return TypeUint16
	case int16:
		return TypeInt16
	case uint32:
		return TypeUint32
	case int32:
		return TypeInt32
	case float32:
		return TypeFloat32
	case bool:
		return TypeBool
	case string:
		return TypeString
	case uint64:
		return TypeUint64
	case int64:
		return TypeInt64
	case float64:
		return TypeFloat64
	}
	return TypeArray
}

// elemType returns the element type of a normalized array value.
func elemType(v any) ValueType {
	switch v.(type) {
	case []uint8:
		return TypeUint8
	case []int8:
		return TypeInt8
	case []uint16:
		return TypeUint16
	case []int16:
		return TypeInt16
	case []uint32:
		return TypeUint32
	case []int32:
		return TypeInt32
	case []float32:
		return TypeFloat32
	case []bool:
		return TypeBool
	case []string:
		return TypeString
	case []uint64:
		return TypeUint64
	case []int64:
		return TypeInt64
	case []float64:
		return TypeFloat64
	}
	return TypeArray
}

func (e *encoder) value(v any) {
	switch x := v.(type) {
	case uint8:
		e.u8(x)
	case int8:
		e.u8(uint8(x))
	case uint16:
		e.u16(x)
	case int16:
		e.u16(uint16(x))
	case uint32:
		e.u32(x)
	case int32:
		e.u32(uint32(x))
	case float32:
		e.u32(math.Float32bits(x))
	case bool:
		e.u8(b2u(x))
	case string:
		e.str(x)
	case uint64:
		e.u64(x)
	case int64:
		e.u64(uint64(x))
	case float64:
		e.u64(math.Float64bits(x))
	default:
		e.array(v)
	}
}

func (e *encoder) array(v any) {
	e.u32(uint32(elemType(v)))
	switch x := v.(type) {
	case []uint8:
		e.u64(uint64(len(x)))
		e.write(x)
	case []int8:
		e.u64(uint64(len(x)))
		for _, y := range x {
			e.u8(uint8(y))
		}
	case []uint16:
		e.u64(uint64(len(x)))
		for _, y := range x {
			e.u16(y)
		}
	case []int16:
		e.u64(uint64(len(x)))
		for _, y := range x {
			e.u16(uint16(y))
		}
	case []uint32:
		e.u64(uint64(len(x)))
		for _, y := range x {
			e.u32(y)
		}
	case []int32:
		e.u64(uint64(len(x)))
		for _, y := range x {
			e.u32(uint32(y))
		}
	case []float32:
		e.u64(uint64(len(x)))
		for _, y := range x {
			e.u32(math.Float32bits(y))
		}
	case []bool:
		e.u64(uint64(len(x)))
		for _, y := range x {
			e.u8(b2u(y))
		}
	case []string:
		e.u64(uint64(len(x)))
		for _, y := range x {
			e.str(y)
		}
	case []uint64:
		e.u64(uint64(len(x)))
		for _, y := range x {
			e.u64(y)
		}
	case []int64:
		e.u64(uint64(len(x)))
		for _, y := range x {
			e.u64(uint64(y))
		}
	case []float64:
		e.u64(uint64(len(x)))
		for _, y := range x {
			e.u64(math.Float64bits(y))
		}
	case []any:
		e.u64(uint64(len(x)))
		for _, y := range x {
			e.array(y)
		}
	}
}
