package safetensors

import (
	"fmt"
	"math"
)

// DType is the element type of a stored tensor.
type DType int

// Element types found in safetensors files.
const (
	Invalid DType = iota
	F32
	F16
	BF16
	F8E4M3
	I32
	I64
	I8
	U8
	F64
	I16
	U16
	BOOL
	F8E5M2
)

var dtypeNames = map[string]DType{
	"F32": F32, "F16": F16, "BF16": BF16, "F8_E4M3": F8E4M3, "I32": I32, "I64": I64,
	"I8": I8, "U8": U8, "F64": F64, "I16": I16, "U16": U16, "BOOL": BOOL, "F8_E5M2": F8E5M2,
}

// ParseDType returns the DType for a safetensors dtype string such as "BF16".
func ParseDType(s string) (DType, error) {
	if d, ok := dtypeNames[s]; ok {
		return d, nil
	}
	return Invalid, fmt.Errorf("unknown dtype %q", s)
}

// String returns the safetensors spelling of d.
func (d DType) String() string {
	for k, v := range dtypeNames {
		if v == d {
			return k
		}
	}
	return "INVALID"
}

// Size returns the number of bytes of one element.
func (d DType) Size() int {
	switch d {
	case F64, I64:
		return 8
	case F32, I32:
		return 4
	case F16, BF16, I16, U16:
		return 2
	case F8E4M3, F8E5M2, I8, U8, BOOL:
		return 1
	}
	return 0
}

// F8E4M3ToF32 converts an OCP FP8 E4M3FN byte (no infinities, 0x7f/0xff are
// NaN) to float32, by table: cheap enough for per-element loops.
func F8E4M3ToF32(b uint8) float32 { return f8Table[b] }

var f8Table = func() (t [256]float32) {
	for i := range t {
		t[i] = f8Decode(uint8(i))
	}
	return
}()

// f8Decode is the definition of F8E4M3ToF32.
func f8Decode(b uint8) float32 {
	sign := float32(1)
	if b&0x80 != 0 {
		sign = -1
	}
	exp := int(b>>3) & 0xf
	man := float32(b & 7)
	if exp == 15 && b&7 == 7 {
		return float32(math.NaN())
	}
	if exp == 0 {
		return sign * man / 8 * float32(math.Ldexp(1, -6))
	}
	return sign * (1 + man/8) * float32(math.Ldexp(1, exp-7))
}

// F32ToF8E4M3 rounds f to the nearest E4M3FN value (ties to even),
// saturating at ±448; NaN stays NaN.
func F32ToF8E4M3(f float32) uint8 {
	b := math.Float32bits(f)
	sign := uint8(b>>24) & 0x80
	b &= 0x7fffffff
	switch {
	case b > 0x7f800000: // NaN
		return sign | 0x7f
	case b >= 0x43e00000: // ≥ 448 (or infinite): saturate
		return sign | 0x7e
	case b < 0x3c800000: // below 2^-6: a multiple of the subnormal step 2^-9
		m := math.RoundToEven(float64(math.Float32frombits(b)) * 512)
		return sign | uint8(m) // m = 8 is 2^-6, the first normal value
	}
	// keep 3 mantissa bits, rounding the 20 dropped ones to nearest even;
	// a carry moves into the exponent as it should
	r := (b + 0x7ffff + (b>>20)&1) >> 20
	e := int(r>>3) - 127 + 7
	if e > 15 || (e == 15 && r&7 == 7) {
		return sign | 0x7e
	}
	return sign | uint8(e<<3) | uint8(r&7)
}
