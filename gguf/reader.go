package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"unsafe"

	"github.com/ringo-ai/ringo/internal/hugepage"
	"github.com/ringo-ai/ringo/quant"
)

// File is an opened GGUF file. Tensor data slices point into the file
// mapping and are valid until Close.
type File struct {
	// Path is the file name (used in error messages).
	Path string
	// Version is the GGUF version of the file.
	Version uint32
	// Alignment of the data section and of each tensor's data.
	Alignment int
	// KVs are the metadata entries in file order.
	KVs []KV
	// Tensors are the tensor descriptors in file order.
	Tensors []*TensorInfo
	// DataOffset is the absolute file offset of the data section.
	DataOffset int64

	kvIndex     map[string]int
	tensorIndex map[string]int
	data        []byte
	release     func() error
}

// Open memory-maps and parses the GGUF file at path. On systems without mmap
// support the file is read into memory.
func Open(path string) (*File, error) {
	data, release, err := mapFile(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: open %s: %w", path, err)
	}
	f, err := parse(path, data)
	if err != nil {
		release()
		return nil, err
	}
	f.release = release
	return f, nil
}

// OpenBytes parses a GGUF image held in memory; name is used in errors. The
// returned File references data.
func OpenBytes(name string, data []byte) (*File, error) {
	return parse(name, data)
}

// Close releases the file mapping. Tensor Data slices must not be used after.
func (f *File) Close() error {
	if f.release == nil {
		return nil
	}
	err := f.release()
	f.release = nil
	f.data = nil
	for _, t := range f.Tensors {
		t.Data = nil
	}
	if err != nil {
		return fmt.Errorf("gguf: close %s: %w", f.Path, err)
	}
	return nil
}

// Tensor returns the tensor named name, or nil if there is none.
func (f *File) Tensor(name string) *TensorInfo {
	if i, ok := f.tensorIndex[name]; ok {
		return f.Tensors[i]
	}
	return nil
}

// Meta returns the raw value of metadata key (see KV for its Go type).
func (f *File) Meta(key string) (any, bool) {
	if i, ok := f.kvIndex[key]; ok {
		return f.KVs[i].Value, true
	}
	return nil, false
}

// Has reports whether the metadata key exists.
func (f *File) Has(key string) bool { _, ok := f.kvIndex[key]; return ok }

// Keys returns the metadata keys in sorted order.
func (f *File) Keys() []string {
	ks := make([]string, 0, len(f.KVs))
	for _, kv := range f.KVs {
		ks = append(ks, kv.Key)
	}
	sort.Strings(ks)
	return ks
}

// ErrNotFound is wrapped by the typed getters when a key is missing.
var ErrNotFound = errors.New("key not found")

func (f *File) get(key string) (any, error) {
	v, ok := f.Meta(key)
	if !ok {
		return nil, fmt.Errorf("gguf: %s: metadata %q: %w", f.Path, key, ErrNotFound)
	}
	return v, nil
}

func (f *File) typeErr(key string, v any, want string) error {
	return fmt.Errorf("gguf: %s: metadata %q is %T, not %s", f.Path, key, v, want)
}

// String returns a string metadata value.
func (f *File) String(key string) (string, error) {
	v, err := f.get(key)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", f.typeErr(key, v, "a string")
	}
	return s, nil
}

// Uint returns an integer metadata value (any integer type, non-negative) as uint64.
func (f *File) Uint(key string) (uint64, error) {
	v, err := f.get(key)
	if err != nil {
		return 0, err
	}
	i, ok := toInt(v)
	if !ok || i < 0 {
		if u, isU := v.(uint64); isU {
			return u, nil
		}
		return 0, f.typeErr(key, v, "a non-negative integer")
	}
	return uint64(i), nil
}

// Int returns an integer metadata value (any integer type) as int64.
func (f *File) Int(key string) (int64, error) {
	v, err := f.get(key)
	if err != nil {
		return 0, err
	}
	i, ok := toInt(v)
	if !ok {
		return 0, f.typeErr(key, v, "an integer")
	}
	return i, nil
}

// Float returns a numeric metadata value (float or integer) as float64.
func (f *File) Float(key string) (float64, error) {
	v, err := f.get(key)
	if err != nil {
		return 0, err
	}
	switch x := v.(type) {
	case float32:
		return float64(x), nil
	case float64:
		return x, nil
	}
	if i, ok := toInt(v); ok {
		return float64(i), nil
	}
	return 0, f.typeErr(key, v, "a number")
}

// Bool returns a bool metadata value.
func (f *File) Bool(key string) (bool, error) {
	v, err := f.get(key)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, f.typeErr(key, v, "a bool")
	}
	return b, nil
}

// Strings returns a string-array metadata value.
func (f *File) Strings(key string) ([]string, error) {
	v, err := f.get(key)
	if err != nil {
		return nil, err
	}
	s, ok := v.([]string)
	if !ok {
		return nil, f.typeErr(key, v, "a string array")
	}
	return s, nil
}

// Ints returns an integer-array metadata value (any integer element type),
// or a scalar integer as a one-element slice.
func (f *File) Ints(key string) ([]int64, error) {
	v, err := f.get(key)
	if err != nil {
		return nil, err
	}
	if i, ok := toInt(v); ok {
		return []int64{i}, nil
	}
	out, ok := intSlice(v)
	if !ok {
		return nil, f.typeErr(key, v, "an integer array")
	}
	return out, nil
}

// Floats returns a numeric-array metadata value as float64s.
func (f *File) Floats(key string) ([]float64, error) {
	v, err := f.get(key)
	if err != nil {
		return nil, err
	}
	switch x := v.(type) {
	case []float32:
		out := make([]float64, len(x))
		for i, e := range x {
			out[i] = float64(e)
		}
		return out, nil
	case []float64:
		return append([]float64(nil), x...), nil
	}
	if is, ok := intSlice(v); ok {
		out := make([]float64, len(is))
		for i, e := range is {
			out[i] = float64(e)
		}
		return out, nil
	}
	return nil, f.typeErr(key, v, "a numeric array")
}

// UintOr returns Uint(key), or def if the key is absent. A present key of the
// wrong type is still an error.
func (f *File) UintOr(key string, def uint64) (uint64, error) {
	if !f.Has(key) {
		return def, nil
	}
	return f.Uint(key)
}

// FloatOr returns Float(key), or def if the key is absent.
func (f *File) FloatOr(key string, def float64) (float64, error) {
	if !f.Has(key) {
		return def, nil
	}
	return f.Float(key)
}

// BoolOr returns Bool(key), or def if the key is absent.
func (f *File) BoolOr(key string, def bool) (bool, error) {
	if !f.Has(key) {
		return def, nil
	}
	return f.Bool(key)
}

// StringOr returns String(key), or def if the key is absent.
func (f *File) StringOr(key string, def string) (string, error) {
	if !f.Has(key) {
		return def, nil
	}
	return f.String(key)
}

func toInt(v any) (int64, bool) {
	switch x := v.(type) {
	case uint8:
		return int64(x), true
	case int8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case int16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int32:
		return int64(x), true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	case int64:
		return x, true
	}
	return 0, false
}

func intSlice(v any) ([]int64, bool) {
	conv := func(n int, at func(int) int64) []int64 {
		out := make([]int64, n)
		for i := range out {
			out[i] = at(i)
		}
		return out
	}
	switch x := v.(type) {
	case []uint8:
		return conv(len(x), func(i int) int64 { return int64(x[i]) }), true
	case []int8:
		return conv(len(x), func(i int) int64 { return int64(x[i]) }), true
	case []uint16:
		return conv(len(x), func(i int) int64 { return int64(x[i]) }), true
	case []int16:
		return conv(len(x), func(i int) int64 { return int64(x[i]) }), true
	case []uint32:
		return conv(len(x), func(i int) int64 { return int64(x[i]) }), true
	case []int32:
		return conv(len(x), func(i int) int64 { return int64(x[i]) }), true
	case []uint64:
		for _, e := range x {
			if e > math.MaxInt64 {
				return nil, false
			}
		}
		return conv(len(x), func(i int) int64 { return int64(x[i]) }), true
	case []int64:
		return append([]int64(nil), x...), true
	}
	return nil, false
}

// ---- parsing

type decoder struct {
	name string
	b    []byte
	off  int
}

func (d *decoder) errf(format string, args ...any) error {
	return fmt.Errorf("gguf: %s: offset %d: %s", d.name, d.off, fmt.Sprintf(format, args...))
}

func (d *decoder) need(n int, what string) error {
	if n < 0 || n > len(d.b)-d.off {
		return d.errf("truncated reading %s (need %d bytes, %d left)", what, n, len(d.b)-d.off)
	}
	return nil
}

func (d *decoder) u8(what string) (uint8, error) {
	if err := d.need(1, what); err != nil {
		return 0, err
	}
	v := d.b[d.off]
	d.off++
	return v, nil
}

func (d *decoder) u16(what string) (uint16, error) {
	if err := d.need(2, what); err != nil {
		return 0, err
	}
	v := binary.LittleEndian.Uint16(d.b[d.off:])
	d.off += 2
	return v, nil
}

func (d *decoder) u32(what string) (uint32, error) {
	if err := d.need(4, what); err != nil {
		return 0, err
	}
	v := binary.LittleEndian.Uint32(d.b[d.off:])
	d.off += 4
	return v, nil
}

func (d *decoder) u64(what string) (uint64, error) {
	if err := d.need(8, what); err != nil {
		return 0, err
	}
	v := binary.LittleEndian.Uint64(d.b[d.off:])
	d.off += 8
	return v, nil
}

func (d *decoder) str(what string) (string, error) {
	n, err := d.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(len(d.b)-d.off) {
		return "", d.errf("%s length %d exceeds the %d bytes left", what, n, len(d.b)-d.off)
	}
	s := string(d.b[d.off : d.off+int(n)])
	d.off += int(n)
	return s, nil
}

// maxArrayDepth bounds nesting of arrays of arrays.
const maxArrayDepth = 8

func (d *decoder) value(t ValueType, key string, depth int) (any, error) {
	what := fmt.Sprintf("value of %q", key)
	switch t {
	case TypeUint8:
		return d.u8(what)
	case TypeInt8:
		v, err := d.u8(what)
		return int8(v), err
	case TypeUint16:
		return d.u16(what)
	case TypeInt16:
		v, err := d.u16(what)
		return int16(v), err
	case TypeUint32:
		return d.u32(what)
	case TypeInt32:
		v, err := d.u32(what)
		return int32(v), err
	case TypeFloat32:
		v, err := d.u32(what)
		return math.Float32frombits(v), err
	case TypeBool:
		v, err := d.u8(what)
		if err != nil {
			return nil, err
		}
		if v > 1 {
			return nil, d.errf("metadata %q: invalid bool byte %d", key, v)
		}
		return v == 1, nil
	case TypeString:
		return d.str(what)
	case TypeUint64:
		return d.u64(what)
	case TypeInt64:
		v, err := d.u64(what)
		return int64(v), err
	case TypeFloat64:
		v, err := d.u64(what)
		return math.Float64frombits(v), err
	case TypeArray:
		if depth >= maxArrayDepth {
			return nil, d.errf("metadata %q: arrays nested too deeply", key)
		}
		et, err := d.u32(what + " array type")
		if err != nil {
			return nil, err
		}
		n, err := d.u64(what + " array length")
		if err != nil {
			return nil, err
		}
		return d.array(ValueType(et), n, key, depth+1)
	}
	return nil, d.errf("metadata %q: unknown value type %d", key, uint32(t))
}

func (d *decoder) array(et ValueType, n uint64, key string, depth int) (any, error) {
	left := uint64(len(d.b) - d.off)
	minSize := uint64(et.size())
	if et == TypeString || et == TypeArray {
		minSize = 8
		if et == TypeArray {
			minSize = 12
		}
	}
	if minSize == 0 {
		return nil, d.errf("metadata %q: unknown array element type %d", key, uint32(et))
	}
	if n > left/minSize {
		return nil, d.errf("metadata %q: array of %d %v elements exceeds the %d bytes left", key, n, et, left)
	}
	cnt := int(n)
	what := fmt.Sprintf("array %q", key)
	if sz := et.size(); sz > 0 {
		raw := d.b[d.off : d.off+cnt*sz]
		d.off += cnt * sz
		le := binary.LittleEndian
		switch et {
		case TypeUint8:
			return append([]uint8{}, raw...), nil
		case TypeInt8:
			out := make([]int8, cnt)
			for i := range out {
				out[i] = int8(raw[i])
			}
			return out, nil
		case TypeBool:
			out := make([]bool, cnt)
			for i := range out {
				if raw[i] > 1 {
					return nil, d.errf("metadata %q: invalid bool byte %d", key, raw[i])
				}
				out[i] = raw[i] == 1
			}
			return out, nil
		case TypeUint16:
			out := make([]uint16, cnt)
			for i := range out {
				out[i] = le.Uint16(raw[2*i:])
			}
			return out, nil
		case TypeInt16:
			out := make([]int16, cnt)
			for i := range out {
				out[i] = int16(le.Uint16(raw[2*i:]))
			}
			return out, nil
		case TypeUint32:
			out := make([]uint32, cnt)
			for i := range out {
				out[i] = le.Uint32(raw[4*i:])
			}
			return out, nil
		case TypeInt32:
			out := make([]int32, cnt)
			for i := range out {
				out[i] = int32(le.Uint32(raw[4*i:]))
			}
			return out, nil
		case TypeFloat32:
			out := make([]float32, cnt)
			for i := range out {
				out[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
			}
			return out, nil
		case TypeUint64:
			out := make([]uint64, cnt)
			for i := range out {
				out[i] = le.Uint64(raw[8*i:])
			}
			return out, nil
		case TypeInt64:
			out := make([]int64, cnt)
			for i := range out {
				out[i] = int64(le.Uint64(raw[8*i:]))
			}
			return out, nil
		case TypeFloat64:
			out := make([]float64, cnt)
			for i := range out {
				out[i] = math.Float64frombits(le.Uint64(raw[8*i:]))
			}
			return out, nil
		}
	}
	if et == TypeString {
		out := make([]string, cnt)
		for i := range out {
			s, err := d.str(what)
			if err != nil {
				return nil, err
			}
			out[i] = s
		}
		return out, nil
	}
	out := make([]any, cnt)
	for i := range out {
		v, err := d.value(TypeArray, key, depth)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func parse(name string, data []byte) (*File, error) {
	d := &decoder{name: name, b: data}
	magic, err := d.u32("magic")
	if err != nil {
		return nil, err
	}
	if magic != Magic {
		return nil, fmt.Errorf("gguf: %s: bad magic %#08x (not a GGUF file)", name, magic)
	}
	version, err := d.u32("version")
	if err != nil {
		return nil, err
	}
	if version != 2 && version != 3 {
		return nil, fmt.Errorf("gguf: %s: unsupported GGUF version %d", name, version)
	}
	nTensors, err := d.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := d.u64("metadata count")
	if err != nil {
		return nil, err
	}
	left := uint64(len(data) - d.off)
	if nKV > left/12 { // key length (8) + type (4) at least
		return nil, fmt.Errorf("gguf: %s: metadata count %d too large for file size %d", name, nKV, len(data))
	}
	if nTensors > left/24 { // name length (8) + n_dims (4) + type (4) + offset (8)
		return nil, fmt.Errorf("gguf: %s: tensor count %d too large for file size %d", name, nTensors, len(data))
	}
	f := &File{
		Path:        name,
		Version:     version,
		Alignment:   DefaultAlignment,
		KVs:         make([]KV, 0, nKV),
		kvIndex:     make(map[string]int, nKV),
		Tensors:     make([]*TensorInfo, 0, nTensors),
		tensorIndex: make(map[string]int, nTensors),
		data:        data,
	}
	for i := uint64(0); i < nKV; i++ {
		key, err := d.str(fmt.Sprintf("metadata key #%d", i))
		if err != nil {
			return nil, err
		}
		t, err := d.u32(fmt.Sprintf("type of %q", key))
		if err != nil {
			return nil, err
		}
		v, err := d.value(ValueType(t), key, 0)
		if err != nil {
			return nil, err
		}
		if _, dup := f.kvIndex[key]; dup {
			return nil, fmt.Errorf("gguf: %s: duplicate metadata key %q", name, key)
		}
		f.kvIndex[key] = len(f.KVs)
		f.KVs = append(f.KVs, KV{key, v})
	}
	if v, ok := f.Meta(KeyAlignment); ok {
		a, ok := toInt(v)
		if !ok || a <= 0 || a > 1<<20 || a&(a-1) != 0 {
			return nil, fmt.Errorf("gguf: %s: invalid %s %v", name, KeyAlignment, v)
		}
		f.Alignment = int(a)
	}
	for i := uint64(0); i < nTensors; i++ {
		tname, err := d.str(fmt.Sprintf("tensor name #%d", i))
		if err != nil {
			return nil, err
		}
		nd, err := d.u32(fmt.Sprintf("n_dims of tensor %q", tname))
		if err != nil {
			return nil, err
		}
		if nd > MaxDims {
			return nil, fmt.Errorf("gguf: %s: tensor %q has %d dimensions (max %d)", name, tname, nd, MaxDims)
		}
		ti := &TensorInfo{Name: tname, Shape: make([]int64, nd)}
		n := int64(1)
		for j := range ti.Shape {
			v, err := d.u64(fmt.Sprintf("shape of tensor %q", tname))
			if err != nil {
				return nil, err
			}
			if v > math.MaxInt64 || (v > 0 && n > math.MaxInt64/int64(v)) {
				return nil, fmt.Errorf("gguf: %s: tensor %q: shape overflows", name, tname)
			}
			ti.Shape[j] = int64(v)
			n *= int64(v)
		}
		typ, err := d.u32(fmt.Sprintf("type of tensor %q", tname))
		if err != nil {
			return nil, err
		}
		ti.Type = quant.Type(typ)
		if !ti.Type.Known() {
			return nil, fmt.Errorf("gguf: %s: tensor %q has unknown type %d", name, tname, typ)
		}
		if len(ti.Shape) > 0 && ti.Shape[0]%int64(quant.BlockSize(ti.Type)) != 0 {
			return nil, fmt.Errorf("gguf: %s: tensor %q: row length %d not a multiple of the %v block size %d", name, tname, ti.Shape[0], ti.Type, quant.BlockSize(ti.Type))
		}
		off, err := d.u64(fmt.Sprintf("offset of tensor %q", tname))
		if err != nil {
			return nil, err
		}
		if off > math.MaxInt64 || off%uint64(f.Alignment) != 0 {
			return nil, fmt.Errorf("gguf: %s: tensor %q: offset %d not aligned to %d", name, tname, off, f.Alignment)
		}
		ti.Offset = int64(off)
		if _, dup := f.tensorIndex[tname]; dup {
			return nil, fmt.Errorf("gguf: %s: duplicate tensor %q", name, tname)
		}
		f.tensorIndex[tname] = len(f.Tensors)
		f.Tensors = append(f.Tensors, ti)
	}
	// data section starts at the next multiple of the alignment
	a := int64(f.Alignment)
	f.DataOffset = (int64(d.off) + a - 1) / a * a
	if nTensors > 0 && f.DataOffset > int64(len(data)) {
		return nil, fmt.Errorf("gguf: %s: truncated: data section at %d beyond file size %d", name, f.DataOffset, len(data))
	}
	dataLen := int64(len(data)) - f.DataOffset
	for _, ti := range f.Tensors {
		size, err := quant.TensorBytes(ti.Type, ti.NumElements())
		if err != nil {
			return nil, fmt.Errorf("gguf: %s: tensor %q: %w", name, ti.Name, err)
		}
		if ti.Offset > dataLen || size > dataLen-ti.Offset {
			return nil, fmt.Errorf("gguf: %s: tensor %q: data [%d, %d) beyond end of file (data section has %d bytes; file truncated?)", name, ti.Name, ti.Offset, ti.Offset+size, max(dataLen, 0))
		}
		start := f.DataOffset + ti.Offset
		ti.Data = data[start : start+size : start+size]
	}
	return f, nil
}

// HugePageShare touches samples places spread over the mapped file and
// reports which share of them the kernel mapped with 2 MiB pages (see
// hugepage.MappedShare); ok is false where that cannot be told.
func (f *File) HugePageShare(samples int) (share float64, ok bool) {
	return hugepage.MappedShare(f.data, samples)
}

// DropPages tells the kernel that the process needs none of the mapped
// file's pages now (after its tensors were copied elsewhere): they leave
// its resident set, stay in the page cache as long as the kernel likes,
// and are read again if a tensor's Data is used. Without a mapping (a file
// read into memory, OpenBytes) it does nothing.
func (f *File) DropPages() error {
	if f.release == nil || len(f.data) == 0 {
		return nil
	}
	return dropPages(f.data)
}

// DropRange is DropPages for the whole pages of the mapping that b covers
// (a tensor's Data, say); b outside the mapping is ignored.
func (f *File) DropRange(b []byte) error {
	if f.release == nil || len(f.data) == 0 || len(b) == 0 {
		return nil
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(f.data)))
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	hi := lo + uintptr(len(b))
	if lo < base || hi > base+uintptr(len(f.data)) {
		return nil
	}
	const page = 4096
	lo, hi = (lo+page-1)&^(page-1), hi&^(page-1) // whole pages only
	if lo >= hi {
		return nil
	}
	return dropPages(f.data[lo-base : hi-base])
}
