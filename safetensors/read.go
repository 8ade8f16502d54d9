// Package safetensors reads and writes the safetensors format: single files,
// memory-mapped, and sharded checkpoints described by model.safetensors.index.json.
package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// Tensor is one tensor of a file. Data aliases the file mapping.
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte
	File  string // path of the file that holds it
}

// Elems returns the number of elements.
func (t *Tensor) Elems() int {
	n := 1
	for _, s := range t.Shape {
		n *= s
	}
	return n
}

// File is an open, memory-mapped safetensors file.
type File struct {
	Path     string
	Metadata map[string]string
	tensors  map[string]*Tensor
	names    []string
	unmap    func() error
}

const maxHeader = 100 << 20

// Open maps a safetensors file and validates its header: every tensor's
// offsets must lie inside the file and match its dtype and shape.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	size := st.Size()
	if size < 8 {
		return nil, fmt.Errorf("%s: truncated file (%d bytes, no header)", path, size)
	}
	data, unmap, err := mapFile(f, size)
	if err != nil {
		return nil, fmt.Errorf("%s: map: %w", path, err)
	}
	sf, err := parse(path, data)
	if err != nil {
		unmap()
		return nil, err
	}
	sf.unmap = unmap
	return sf, nil
}

type headerEntry struct {
	DType   string  `json:"dtype"`
	Shape   []int   `json:"shape"`
	Offsets []int64 `json:"data_offsets"`
}

func parse(path string, data []byte) (*File, error) {
	hlen := binary.LittleEndian.Uint64(data[:8])
	if hlen > maxHeader || int64(hlen) > int64(len(data))-8 {
		return nil, fmt.Errorf("%s: truncated or corrupt file: header length %d, file size %d", path, hlen, len(data))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data[8:8+hlen], &raw); err != nil {
		return nil, fmt.Errorf("%s: corrupt header: %w", path, err)
	}
	body := data[8+hlen:]
	sf := &File{Path: path, tensors: make(map[string]*Tensor, len(raw))}
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &sf.Metadata); err != nil {
				return nil, fmt.Errorf("%s: corrupt __metadata__: %w", path, err)
			}
			continue
		}
		var e headerEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, fmt.Errorf("%s: tensor %s: corrupt header entry: %w", path, name, err)
		}
		dt, err := ParseDType(e.DType)
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %s: %w", path, name, err)
		}
		if len(e.Offsets) != 2 {
			return nil, fmt.Errorf("%s: tensor %s: data_offsets must have 2 entries", path, name)
		}
		n := int64(1)
		for _, s := range e.Shape {
			if s < 0 || (s > 0 && n > (1<<50)/int64(s)) {
				return nil, fmt.Errorf("%s: tensor %s: bad shape %v", path, name, e.Shape)
			}
			n *= int64(s)
		}
		b, en := e.Offsets[0], e.Offsets[1]
		if b < 0 || en < b || en > int64(len(body)) {
			return nil, fmt.Errorf("%s: tensor %s: data [%d,%d) outside the file's %d data bytes (truncated file?)", path, name, b, en, len(body))
		}
		if en-b != n*int64(dt.Size()) {
			return nil, fmt.Errorf("%s: tensor %s: %d bytes for shape %v of %s (want %d)", path, name, en-b, e.Shape, dt, n*int64(dt.Size()))
		}
		sf.tensors[name] = &Tensor{Name: name, DType: dt, Shape: e.Shape, Data: body[b:en:en], File: path}
		sf.names = append(sf.names, name)
	}
	sort.Strings(sf.names)
	return sf, nil
}

// Names lists the tensor names in sorted order.
func (f *File) Names() []string { return f.names }

// Tensor returns the named tensor or nil.
func (f *File) Tensor(name string) *Tensor { return f.tensors[name] }

// Close unmaps the file; tensors obtained from it must not be used afterwards.
func (f *File) Close() error {
	if f.unmap == nil {
		return nil
	}
	err := f.unmap()
	f.unmap = nil
	return err
}

// Set is the tensors of a checkpoint directory, possibly sharded over several files.
type Set struct {
	Files   []*File
	tensors map[string]*Tensor
}

// OpenDir opens a checkpoint directory: model.safetensors.index.json with its
// shards if present, else model.safetensors, else every *.safetensors file.
func OpenDir(dir string) (*Set, error) {
	idx := filepath.Join(dir, "model.safetensors.index.json")
	var files []string
	var wantMap map[string]string
	if b, err := os.ReadFile(idx); err == nil {
		var ix struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(b, &ix); err != nil {
			return nil, fmt.Errorf("%s: %w", idx, err)
		}
		if len(ix.WeightMap) == 0 {
			return nil, fmt.Errorf("%s: empty weight_map", idx)
		}
		seen := map[string]bool{}
		for _, f := range ix.WeightMap {
			if filepath.Base(f) != f {
				return nil, fmt.Errorf("%s: shard name %q is not a plain file name", idx, f)
			}
			if !seen[f] {
				seen[f] = true
				files = append(files, f)
			}
		}
		sort.Strings(files)
		wantMap = ix.WeightMap
	} else if _, err := os.Stat(filepath.Join(dir, "model.safetensors")); err == nil {
		files = []string{"model.safetensors"}
	} else {
		m, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
		for _, p := range m {
			if filepath.Base(p) != "expected.safetensors" {
				files = append(files, filepath.Base(p))
			}
		}
		if len(files) == 0 {
			return nil, fmt.Errorf("%s: no model.safetensors.index.json or *.safetensors files", dir)
		}
	}
	s := &Set{tensors: map[string]*Tensor{}}
	for _, name := range files {
		f, err := Open(filepath.Join(dir, name))
		if err != nil {
			s.Close()
			return nil, err
		}
		s.Files = append(s.Files, f)
		for n, t := range f.tensors {
			s.tensors[n] = t
		}
	}
	for name, file := range wantMap {
		t, ok := s.tensors[name]
		if !ok {
			s.Close()
			return nil, fmt.Errorf("%s: tensor %s listed in the index is missing from %s", dir, name, file)
		}
		if filepath.Base(t.File) != file {
			s.Close()
			return nil, fmt.Errorf("%s: tensor %s is in %s, index says %s", dir, name, filepath.Base(t.File), file)
		}
	}
	return s, nil
}

// Tensor returns the named tensor or nil.
func (s *Set) Tensor(name string) *Tensor { return s.tensors[name] }

// Names lists all tensor names, sorted.
func (s *Set) Names() []string {
	out := make([]string, 0, len(s.tensors))
	for n := range s.tensors {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Close unmaps every file.
func (s *Set) Close() error {
	var first error
	for _, f := range s.Files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
