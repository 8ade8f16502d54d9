package hugepage

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// seekRecorder is an in-memory io.WriteSeeker that records every write.
type seekRecorder struct {
	data   []byte
	pos    int64
	writes [][2]int64 // offset, length
	fail   int        // fail the write with this index (1-based; 0: never)
}

func (r *seekRecorder) Write(p []byte) (int, error) {
	r.writes = append(r.writes, [2]int64{r.pos, int64(len(p))})
	if len(r.writes) == r.fail {
		return 0, errors.New("disk full")
	}
	if end := r.pos + int64(len(p)); end > int64(len(r.data)) {
		r.data = append(r.data, make([]byte, end-int64(len(r.data)))...)
	}
	copy(r.data[r.pos:], p)
	r.pos += int64(len(p))
	return len(p), nil
}

func (r *seekRecorder) Seek(off int64, whence int) (int64, error) {
	if whence != io.SeekStart {
		return 0, errors.New("only SeekStart")
	}
	r.pos = off
	return off, nil
}

// TestWriter writes pieces of random sizes, with seeks, and checks the
// output and that every write but the last of a run ends on a huge page
// boundary.
func TestWriter(t *testing.T) {
	const S = Size
	tests := []struct {
		name  string
		start int64   // offset of the first byte (a resumed download)
		sizes []int   // pieces written in order
		seeks []int64 // before piece i, seek to seeks[i] if >= 0
	}{
		{"small pieces", 0, []int{1, 100, 4096, 7, S - 4204, 1, 5}, nil},
		{"large pieces", 0, []int{3*S + 17, 2 * S, 5, S}, nil},
		{"seek back and forth", 0, []int{S + 3, 1000, 2*S + 1, 10}, []int64{-1, 5 * S / 2, 7, S + 1}},
		{"unaligned start", S + 12345, []int{S, 2 * S, 99}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			rec := &seekRecorder{pos: tt.start}
			cw := NewWriter(rec, tt.start)
			want := []byte{}
			pos := tt.start
			runStart := map[int]bool{0: true} // indexes of writes that follow a seek
			for i, n := range tt.sizes {
				if i < len(tt.seeks) && tt.seeks[i] >= 0 {
					if err := cw.Flush(); err != nil {
						t.Fatal(err)
					}
					if _, err := rec.Seek(tt.seeks[i], io.SeekStart); err != nil {
						t.Fatal(err)
					}
					cw.Seeked(tt.seeks[i])
					pos = tt.seeks[i]
					runStart[len(rec.writes)] = true
				}
				p := make([]byte, n)
				for j := range p {
					p[j] = byte(r.Uint32())
				}
				if m, err := cw.Write(p); m != n || err != nil {
					t.Fatalf("Write(%d bytes) = %d, %v", n, m, err)
				}
				if end := pos + int64(n); end > int64(len(want)) {
					want = append(want, make([]byte, end-int64(len(want)))...)
				}
				copy(want[pos:], p)
				pos += int64(n)
			}
			if err := cw.Flush(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(rec.data, want) {
				t.Fatal("output differs from what was written")
			}
			for i, w := range rec.writes {
				last := i+1 == len(rec.writes) || runStart[i+1]
				if end := w[0] + w[1]; !last && end%S != 0 {
					t.Errorf("write %d at %d, %d bytes, ends off a %d boundary", i, w[0], w[1], S)
				}
				if w[1] > S {
					t.Errorf("write %d is %d bytes, more than %d", i, w[1], S)
				}
			}
		})
	}
}

// TestWriterError checks that a failed write is reported, then sticks.
func TestWriterError(t *testing.T) {
	rec := &seekRecorder{fail: 2}
	cw := NewWriter(rec, 0)
	p := make([]byte, 3*Size)
	n, err := cw.Write(p)
	if err == nil || n == len(p) {
		t.Fatalf("Write = %d, %v; want the second chunk's error", n, err)
	}
	if _, err := cw.Write([]byte{1}); err == nil {
		t.Fatal("write after an error succeeded")
	}
	if err := cw.Flush(); err == nil {
		t.Fatal("Flush after an error succeeded")
	}
}
