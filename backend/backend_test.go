package backend

import (
	"strings"
	"testing"
)

func TestScaleGrid(t *testing.T) {
	for _, c := range []struct {
		w      HostWeight
		sr, sc int
		err    string
	}{
		{HostWeight{Name: "w", Rows: 200, Cols: 300, BlockRows: 128, BlockCols: 128, Scale: make([]float32, 6)}, 2, 3, ""},
		{HostWeight{Name: "w", Rows: 128, Cols: 128, BlockRows: 128, BlockCols: 128, Scale: make([]float32, 1)}, 1, 1, ""},
		{HostWeight{Name: "w", Rows: 200, Cols: 300, BlockRows: 128, BlockCols: 128, Scale: make([]float32, 5)}, 0, 0, "w: FP8 scale has 5 values"},
		{HostWeight{Name: "v", Rows: 2, Cols: 2, Scale: make([]float32, 1)}, 0, 0, "v: FP8 weight without block size"},
	} {
		sr, sc, err := c.w.ScaleGrid()
		if c.err == "" && (err != nil || sr != c.sr || sc != c.sc) {
			t.Errorf("%+v: got %d×%d, %v; want %d×%d", c.w, sr, sc, err, c.sr, c.sc)
		}
		if c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%+v: error %v, want one containing %q", c.w, err, c.err)
		}
	}
}
