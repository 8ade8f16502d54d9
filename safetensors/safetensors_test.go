package safetensors

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	infos := []TensorInfo{
		{Name: "a", DType: F32, Shape: []int{2, 3}},
		{Name: "empty", DType: BF16, Shape: []int{0}},
		{Name: "b", DType: BF16, Shape: []int{5}},
	}
	w, err := Create(filepath.Join(dir, "m.safetensors"), infos, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 24+10)
	for i := range data {
		data[i] = byte(i)
	}
	// written in odd-sized pieces across tensor boundaries
	w.Write(data[:7])
	w.Write(data[7:30])
	w.Write(data[30:])
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := WriteIndex(filepath.Join(dir, "model.safetensors.index.json"), map[string]string{"a": "m.safetensors", "b": "m.safetensors", "empty": "m.safetensors"}, 34); err != nil {
		t.Fatal(err)
	}
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if a := s.Tensor("a"); a == nil || string(a.Data) != string(data[:24]) || a.Shape[1] != 3 {
		t.Fatalf("tensor a: %+v", a)
	}
	if b := s.Tensor("b"); b == nil || string(b.Data) != string(data[24:]) {
		t.Fatalf("tensor b: %+v", b)
	}
	if s.Files[0].Metadata["format"] != "pt" {
		t.Fatal("metadata lost")
	}
}

func TestWriterChecksCounts(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.safetensors")
	w, _ := Create(p, []TensorInfo{{Name: "a", DType: F32, Shape: []int{2}}}, nil)
	if _, err := w.Write(make([]byte, 12)); err == nil {
		t.Fatal("writing past the declared tensors succeeded")
	}
	w2, _ := Create(p, []TensorInfo{{Name: "a", DType: F32, Shape: []int{2}}}, nil)
	w2.Write(make([]byte, 4))
	if err := w2.Close(); err == nil {
		t.Fatal("closing a short file succeeded")
	}
}

func TestOpenGarbage(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"empty":      "",
		"short":      "abc",
		"badlen":     "\xff\xff\xff\xff\xff\xff\xff\x00{}",
		"notjson":    "\x02\x00\x00\x00\x00\x00\x00\x00{x",
		"badoffsets": "\x3c\x00\x00\x00\x00\x00\x00\x00{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o644)
		if _, err := Open(p); err == nil {
			t.Errorf("%s: opened without error", name)
		}
	}
}

// TestF8Conversions checks that every finite E4M3 value survives a round
// trip and that large values saturate (the half-precision conversions live
// in package quant).
func TestF8Conversions(t *testing.T) {
	for b := 0; b < 256; b++ {
		v := F8E4M3ToF32(uint8(b))
		if v != v {
			continue
		}
		if back := F32ToF8E4M3(v); F8E4M3ToF32(back) != v {
			t.Errorf("fp8 %#x → %v → %#x", b, v, back)
		}
	}
	if F8E4M3ToF32(0x7e) != 448 || F32ToF8E4M3(1000) != 0x7e {
		t.Error("fp8 max or saturation wrong")
	}
}

// f8Search is the definition of F32ToF8E4M3: the nearest finite E4M3FN
// value by exhaustive search, ties to the even code, saturating at ±448.
func f8Search(f float32) uint8 {
	var sign uint8
	if math.Signbit(float64(f)) {
		sign, f = 0x80, -f
	}
	if f != f {
		return 0x7f
	}
	if f >= 448 {
		return sign | 0x7e
	}
	best, bestErr := uint8(0), math.Inf(1)
	for c := uint8(0); c < 0x7f; c++ {
		e := math.Abs(float64(F8E4M3ToF32(c)) - float64(f))
		if e < bestErr || (e == bestErr && c&1 == 0) {
			best, bestErr = c, e
		}
	}
	return sign | best
}

func TestF32ToF8E4M3MatchesSearch(t *testing.T) {
	var cases []float32
	// every representable value, the midpoints between neighbours and one
	// float32 step either side of them (where rounding decides)
	for c := 0; c < 0x7e; c++ {
		a, b := F8E4M3ToF32(uint8(c)), F8E4M3ToF32(uint8(c+1))
		mid := (a + b) / 2
		for _, v := range []float32{a, b, mid, math.Nextafter32(mid, 0), math.Nextafter32(mid, 1000)} {
			cases = append(cases, v, -v)
		}
	}
	// a sweep over the bit patterns from 2^-12 to 2^10
	for bits := uint32(0x39800000); bits < 0x44800000; bits += 0x1357 {
		cases = append(cases, math.Float32frombits(bits), -math.Float32frombits(bits))
	}
	cases = append(cases, 0, float32(math.Copysign(0, -1)), 447.9, 448, 463.9, 464, 1e30, float32(math.Inf(1)), float32(math.Inf(-1)), 1e-30)
	for _, f := range cases {
		if got, want := F32ToF8E4M3(f), f8Search(f); got != want {
			t.Fatalf("F32ToF8E4M3(%g) = %#x, want %#x", f, got, want)
		}
	}
	if got := F32ToF8E4M3(float32(math.NaN())); F8E4M3ToF32(got) == F8E4M3ToF32(got) {
		t.Errorf("NaN became %#x", got)
	}
}
