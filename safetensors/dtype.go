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

// BF16ToF32 converts bfloat16 bits to float32.
func BF16ToF32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// F32ToBF16 rounds f to the nearest bfloat16 (ties to even), keeping NaN a NaN.
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x40
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// F16ToF32 converts IEEE half-precision bits to float32.
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0 && man == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		f := float32(man) / 1024 / 16384
		if sign != 0 {
			return -f
		}
		return f
	case exp == 31:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}

// F32ToF16 rounds f to the nearest half-precision value (ties to even).
func F32ToF16(f float32) uint16 {
	u := math.Float32bits(f)
	sign := uint16(u>>16) & 0x8000
	if u&0x7fffffff > 0x7f800000 {
		return sign | 0x7e00
	}
	a := math.Abs(float64(f))
	if a >= 65520 {
		return sign | 0x7c00
	}
	if a < 6.103515625e-05 { // subnormal
		m := math.RoundToEven(a * 16777216)
		return sign | uint16(m)
	}
	exp := int(u>>23&0xff) - 127
	man := u & 0x7fffff
	// round mantissa to 10 bits
	r := man >> 13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++
	}
	if r == 0x400 {
		r = 0
		exp++
	}
	return sign | uint16(exp+15)<<10 | uint16(r)
}

// F8E4M3ToF32 converts an OCP FP8 E4M3FN byte (no infinities, 0x7f/0xff are NaN) to float32.
func F8E4M3ToF32(b uint8) float32 {
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
