package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/quant"
)

// TestKVConversions writes, reads, copies (between every pair of types and
// through row views, as forks and cache growth do) and zeroes KV tensors of
// every type, checking values against the written float32 data within each
// type's rounding, and that copies between tensors of the same type are
// exact.
func TestKVConversions(t *testing.T) {
	const rows, cols = 9, 96
	r := rand.New(rand.NewPCG(51, 52))
	src := make([]float32, rows*cols)
	for i := range src {
		src[i] = float32(r.NormFloat64())
	}
	// kinds of KV tensors: the types, and for Q8_0 in tiles (where this
	// CPU uses them) the key and the value layout
	type kind struct {
		kt    kvType
		value bool
	}
	types := []kind{{kvF32, false}, {kvF16, false}, {kvQ8, false}}
	if quant.TiledKV() {
		types = append(types, kind{kvQ8T, false}, kind{kvQ8T, true})
	} else {
		t.Log("no tiled Q8_0 caches on this CPU")
	}
	// largest error allowed, relative to the largest magnitude of a row
	tol := map[kvType]float64{kvF32: 0, kvF16: 1e-3, kvQ8: 1.0 / 127, kvQ8T: 1.0 / 127}
	allocKind := func(k kind, rows, cols int) (*Backend, backend.Tensor) {
		b := New(1)
		b.kv = min(k.kt, kvQ8)
		b.kvRows = k.kt == kvQ8
		kv := b.AllocKV(rows, cols)
		t := kv.K
		if k.value {
			t = kv.V
		}
		if kvTypeOf(t) != k.kt {
			panic("AllocKV type")
		}
		return b, t
	}
	check := func(t *testing.T, what string, got []float32, kt kvType) {
		t.Helper()
		for i := 0; i < rows; i++ {
			var mx, md float64
			for c := 0; c < cols; c++ {
				mx = math.Max(mx, math.Abs(float64(src[i*cols+c])))
				md = math.Max(md, math.Abs(float64(got[i*cols+c]-src[i*cols+c])))
			}
			if md > tol[kt]*mx+1e-30 {
				t.Fatalf("%s: row %d error %.3g of %.3g", what, i, md, mx)
			}
		}
	}
	for _, a := range types {
		b, ta := allocKind(a, rows+3, cols)
		b.Write(ta.RowRange(2, rows), src)
		got := make([]float32, rows*cols)
		b.Read(ta.RowRange(2, rows), got)
		check(t, "write/read", got, a.kt)
		for _, c := range types {
			_, tc := allocKind(c, rows, cols)
			b.Copy(tc, ta.RowRange(2, rows))
			got2 := make([]float32, rows*cols)
			b.Read(tc, got2)
			if a == c {
				for i := range got {
					if got2[i] != got[i] {
						t.Fatalf("copy %v→%v is not exact", a, c)
					}
				}
			} else {
				// rounded once more at most: the coarser of the two
				check(t, "copy", got2, max(a.kt, c.kt))
			}
		}
		b.Zero(ta)
		zero := make([]float32, (rows+3)*cols)
		b.Read(ta, zero)
		for _, v := range zero {
			if v != 0 {
				t.Fatalf("kind %v: Zero left %v", a, v)
			}
		}
	}
	// a Q8_0 column view of whole blocks reads its columns; one that cuts
	// a block reads too (attention over head dims below 32) but cannot be
	// written
	views := []kind{{kvQ8, false}}
	if quant.TiledKV() {
		views = append(views, kind{kvQ8T, false}, kind{kvQ8T, true})
	}
	for _, k := range views {
		checkViews(t, allocKind, k, src, rows, cols)
	}
	// a row length that is not whole blocks falls back to float32
	b := New(1)
	b.kv = kvQ8
	if kv := b.AllocKV(2, 48); kvTypeOf(kv.K) != kvF32 || kvTypeOf(kv.V) != kvF32 {
		t.Errorf("AllocKV(2, 48) with q8_0: types %d, %d, want float32", kvTypeOf(kv.K), kvTypeOf(kv.V))
	}
	if n := (&q8buffer{make([]byte, 3*q8BlockBytes)}).Len(); n != 3*quant.QK {
		t.Errorf("q8buffer.Len = %d", n)
	}
}

// checkViews checks column views of a Q8_0 tensor: views of whole blocks
// read their columns; one that cuts a block reads too (attention over head
// dims below 32) but cannot be written.
func checkViews[K any](t *testing.T, alloc func(K, int, int) (*Backend, backend.Tensor), k K, src []float32, rows, cols int) {
	b, tq := alloc(k, rows+5, cols)
	tq = tq.RowRange(5, rows)
	b.Write(tq, src)
	for _, cr := range [][2]int{{32, 64}, {16, 16}, {40, 50}} {
		v := tq.ColRange(cr[0], cr[1])
		got := make([]float32, rows*cr[1])
		b.Read(v, got)
		full := make([]float32, rows*cols)
		b.Read(tq, full)
		for i := 0; i < rows; i++ {
			for c := 0; c < cr[1]; c++ {
				if got[i*cr[1]+c] != full[i*cols+cr[0]+c] {
					t.Fatalf("view %v: row %d col %d differs", cr, i, c)
				}
			}
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("write to a Q8_0 view that cuts a block did not panic")
			}
		}()
		b.Write(tq.ColRange(16, 32), make([]float32, rows*32))
	}()
}
