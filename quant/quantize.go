package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Quantize encodes src into dst in format t. len(src) must be a multiple of
// BlockSize(t) and dst must hold at least RowBytes(t, len(src)) bytes. The
// encoding is bit-compatible with ggml (the Q4_K and Q6_K encoders use a
// weighted least-squares scale search like ggml's reference quantizers).
func Quantize(t Type, dst []byte, src []float32) error {
	if !t.Supported() {
		return fmt.Errorf("quant: Quantize: type %v not supported", t)
	}
	bs := BlockSize(t)
	if len(src)%bs != 0 {
		return fmt.Errorf("quant: Quantize %v: %d elements is not a multiple of block size %d", t, len(src), bs)
	}
	need := RowBytes(t, len(src))
	if len(dst) < need {
		return fmt.Errorf("quant: Quantize %v: dst has %d bytes, need %d", t, len(dst), need)
	}
	ts := TypeSize(t)
	nb := len(src) / bs
	switch t {
	case F32:
		for i, f := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(f))
		}
	case F16:
		F32SliceToF16(dst, src)
	case BF16:
		F32SliceToBF16(dst, src)
	case Q4_0:
		for i := 0; i < nb; i++ {
			quantizeQ4_0Block(dst[i*ts:(i+1)*ts], src[i*bs:(i+1)*bs])
		}
	case Q8_0:
		for i := 0; i < nb; i++ {
			quantizeQ8_0Block(dst[i*ts:(i+1)*ts], src[i*bs:(i+1)*bs])
		}
	case Q4_K:
		for i := 0; i < nb; i++ {
			quantizeQ4KBlock(dst[i*ts:(i+1)*ts], src[i*bs:(i+1)*bs])
		}
	case Q6_K:
		for i := 0; i < nb; i++ {
			quantizeQ6KBlock(dst[i*ts:(i+1)*ts], src[i*bs:(i+1)*bs])
		}
	case Q8_K:
		for i := 0; i < nb; i++ {
			quantizeQ8KBlock(dst[i*ts:(i+1)*ts], src[i*bs:(i+1)*bs])
		}
	}
	return nil
}

// Dequantize decodes the blocks in src (format t) into dst. len(dst) must be a
// multiple of BlockSize(t) and src must hold RowBytes(t, len(dst)) bytes.
func Dequantize(t Type, dst []float32, src []byte) error {
	if !t.Supported() {
		return fmt.Errorf("quant: Dequantize: type %v not supported", t)
	}
	bs := BlockSize(t)
	if len(dst)%bs != 0 {
		return fmt.Errorf("quant: Dequantize %v: %d elements is not a multiple of block size %d", t, len(dst), bs)
	}
	need := RowBytes(t, len(dst))
	if len(src) < need {
		return fmt.Errorf("quant: Dequantize %v: src has %d bytes, need %d", t, len(src), need)
	}
	if len(dst) == 0 {
		return nil
	}
	ts := TypeSize(t)
	nb := len(dst) / bs
	if f := fastDequant[t]; f != nil {
		f(dst, src, nb)
		return nil
	}
	switch t {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case F16:
		F16SliceToF32(dst, src)
	case BF16:
		BF16SliceToF32(dst, src)
	case Q4_0:
		for i := 0; i < nb; i++ {
			dequantQ4_0Block(dst[i*bs:(i+1)*bs], src[i*ts:(i+1)*ts])
		}
	case Q8_0:
		for i := 0; i < nb; i++ {
			dequantQ8_0Block(dst[i*bs:(i+1)*bs], src[i*ts:(i+1)*ts])
		}
	case Q4_K:
		for i := 0; i < nb; i++ {
			dequantQ4KBlock(dst[i*bs:(i+1)*bs], src[i*ts:(i+1)*ts])
		}
	case Q6_K:
		for i := 0; i < nb; i++ {
			dequantQ6KBlock(dst[i*bs:(i+1)*bs], src[i*ts:(i+1)*ts])
		}
	case Q8_K:
		for i := 0; i < nb; i++ {
			dequantQ8KBlock(dst[i*bs:(i+1)*bs], src[i*ts:(i+1)*ts])
		}
	}
	return nil
}

// fastDequant holds SIMD block dequantizers (nb whole blocks of src into
// dst; nil map or entry where there is none). They give bit-for-bit the
// results of the Go block functions.
var fastDequant map[Type]func(dst []float32, src []byte, nb int)

func getF16(b []byte) float32 { return F16ToF32(binary.LittleEndian.Uint16(b)) }
func putF16(b []byte, f float32) {
	binary.LittleEndian.PutUint16(b, F32ToF16(f))
}

// nearestInt rounds half to even, like ggml's nearest_int.
func nearestInt(f float32) int { return int(math.RoundToEven(float64(f))) }

// ---- Q4_0: d f16 | qs[16]; element j<16 in low nibble of qs[j], j>=16 in high nibble of qs[j-16].

func quantizeQ4_0Block(dst []byte, x []float32) {
	var amax, max float32
	for _, v := range x[:32] {
		if a := abs32(v); a > amax {
			amax, max = a, v
		}
	}
	d := max / -8
	var id float32
	if d != 0 {
		id = 1 / d
	}
	putF16(dst[0:], d)
	qs := dst[2:18]
	for j := 0; j < 16; j++ {
		x0 := x[j]*id + 8.5
		x1 := x[16+j]*id + 8.5
		q0 := min(15, int(int8(x0)))
		q1 := min(15, int(int8(x1)))
		qs[j] = byte(q0) | byte(q1)<<4
	}
}

func dequantQ4_0Block(y []float32, b []byte) {
	d := getF16(b)
	qs := b[2:18]
	for j := 0; j < 16; j++ {
		y[j] = float32(int(qs[j]&0xf)-8) * d
		y[j+16] = float32(int(qs[j]>>4)-8) * d
	}
}

// ---- Q8_0: d f16 | qs[32] int8.

func quantizeQ8_0Block(dst []byte, x []float32) {
	var amax float32
	for _, v := range x[:32] {
		amax = max(amax, abs32(v))
	}
	d := amax / 127
	var id float32
	if d != 0 {
		id = 1 / d
	}
	putF16(dst[0:], d)
	for j := 0; j < 32; j++ {
		dst[2+j] = byte(int8(math.Round(float64(x[j] * id))))
	}
}

func dequantQ8_0Block(y []float32, b []byte) {
	d := getF16(b)
	for j := 0; j < 32; j++ {
		y[j] = float32(int8(b[2+j])) * d
	}
}

// ---- Q8_K: d f32 | qs[256] int8 | bsums[16] int16 (sum of each 16 quants).

func quantizeQ8KBlock(dst []byte, x []float32) {
	var amax, max float32
	for _, v := range x[:256] {
		if a := abs32(v); a > amax {
			amax, max = a, v
		}
	}
	if amax == 0 {
		clear(dst[:292])
		return
	}
	iscale := -127 / max
	qs := dst[4:260]
	for j := 0; j < 256; j++ {
		v := nearestInt(iscale * x[j])
		qs[j] = byte(int8(min(127, v)))
	}
	for j := 0; j < 16; j++ {
		s := 0
		for l := 0; l < 16; l++ {
			s += int(int8(qs[16*j+l]))
		}
		binary.LittleEndian.PutUint16(dst[260+2*j:], uint16(int16(s)))
	}
	binary.LittleEndian.PutUint32(dst[0:], math.Float32bits(1/iscale))
}

func dequantQ8KBlock(y []float32, b []byte) {
	d := math.Float32frombits(binary.LittleEndian.Uint32(b))
	for j := 0; j < 256; j++ {
		y[j] = d * float32(int8(b[4+j]))
	}
}

func abs32(f float32) float32 { return math.Float32frombits(math.Float32bits(f) &^ (1 << 31)) }
