package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/ringo-ai/ringo/internal/hugepage"
)

// TensorInfo declares a tensor to write: its name, dtype and shape.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int
}

// Bytes returns the tensor's data size.
func (ti TensorInfo) Bytes() int64 {
	n := int64(ti.DType.Size())
	for _, s := range ti.Shape {
		n *= int64(s)
	}
	return n
}

// Writer streams a safetensors file: the header is written first from the
// declared tensors, then each tensor's bytes in declaration order, so nothing
// has to be held in memory.
type Writer struct {
	f     *os.File
	w     *hugepage.Writer // aligned 2 MiB pieces, see package hugepage
	infos []TensorInfo
	next  int
	left  int64
	path  string
}

// Create starts a file holding exactly the declared tensors, in that order.
func Create(path string, infos []TensorInfo, metadata map[string]string) (*Writer, error) {
	header := map[string]any{}
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	var off int64
	for _, ti := range infos {
		sz := ti.Bytes()
		shape := ti.Shape
		if shape == nil {
			shape = []int{}
		}
		header[ti.Name] = headerEntry{DType: ti.DType.String(), Shape: shape, Offsets: []int64{off, off + sz}}
		off += sz
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return nil, err
	}
	for len(hb)%8 != 0 {
		hb = append(hb, ' ')
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w := &Writer{f: f, w: hugepage.NewWriter(f, 0), infos: infos, path: path}
	var l [8]byte
	binary.LittleEndian.PutUint64(l[:], uint64(len(hb)))
	w.w.Write(l[:])
	w.w.Write(hb)
	if len(infos) > 0 {
		w.left = infos[0].Bytes()
	}
	return w, nil
}

// Write appends data of the current tensor; a tensor may be written in several calls.
func (w *Writer) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		w.skipDone()
		if w.next >= len(w.infos) {
			return n, fmt.Errorf("%s: data beyond the declared tensors", w.path)
		}
		k := min(int64(len(p)), w.left)
		m, err := w.w.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		w.left -= k
		p = p[k:]
	}
	return n, nil
}

// skipDone moves past tensors whose bytes are all written.
func (w *Writer) skipDone() {
	for w.left == 0 && w.next < len(w.infos) {
		w.next++
		if w.next < len(w.infos) {
			w.left = w.infos[w.next].Bytes()
		}
	}
}

// Close checks that every declared byte was written and closes the file.
func (w *Writer) Close() error {
	ferr := w.w.Flush()
	cerr := w.f.Close()
	w.skipDone()
	if w.next < len(w.infos) {
		return fmt.Errorf("%s: closed before all tensors were written (at %s)", w.path, w.infos[w.next].Name)
	}
	if ferr != nil {
		return ferr
	}
	return cerr
}

var _ io.WriteCloser = (*Writer)(nil)

// WriteIndex writes a model.safetensors.index.json mapping tensor names to shard files.
func WriteIndex(path string, weightMap map[string]string, totalSize int64) error {
	names := make([]string, 0, len(weightMap))
	for n := range weightMap {
		names = append(names, n)
	}
	sort.Strings(names)
	b, err := json.MarshalIndent(map[string]any{
		"metadata":   map[string]any{"total_size": totalSize},
		"weight_map": weightMap,
	}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
