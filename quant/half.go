package quant

import "math"

// F16ToF32 converts an IEEE 754 binary16 value to float32 (exact).
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf/nan
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0:
		if man == 0 {
			return math.Float32frombits(sign)
		}
		// subnormal: value = man * 2^-24
		f := float32(man) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	default:
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	}
}

// F32ToF16 converts a float32 to IEEE binary16 with round-to-nearest-even,
// saturating to ±Inf on overflow and preserving NaN.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	man := b & 0x7fffff
	if exp == 0xff {
		if man != 0 {
			return sign | 0x7e00 | uint16(man>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		m := man | 0x800000
		shift := uint32(14 - e)
		h := m >> shift
		rem := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && h&1 != 0) {
			h++
		}
		return sign | uint16(h)
	}
	h := uint32(e)<<10 | man>>13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 != 0) {
		h++ // may carry into the exponent, which is correct (up to inf)
	}
	return sign | uint16(h)
}

// BF16ToF32 converts a bfloat16 value to float32 (exact).
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 converts float32 to bfloat16 with round-to-nearest-even, the same
// rounding as ggml (NaNs are kept quiet NaNs).
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 64
	}
	return uint16((u + 0x7fff + (u>>16)&1) >> 16)
}

// F16SliceToF32 converts little-endian binary16 values in src to dst
// (len(dst) elements, src must hold 2*len(dst) bytes).
func F16SliceToF32(dst []float32, src []byte) {
	_ = src[2*len(dst)-1]
	for i := range dst {
		dst[i] = F16ToF32(uint16(src[2*i]) | uint16(src[2*i+1])<<8)
	}
}

// BF16SliceToF32 converts little-endian bfloat16 values in src to dst.
func BF16SliceToF32(dst []float32, src []byte) {
	_ = src[2*len(dst)-1]
	for i := range dst {
		dst[i] = math.Float32frombits((uint32(src[2*i]) | uint32(src[2*i+1])<<8) << 16)
	}
}

// F32SliceToF16 converts src to little-endian binary16 into dst (2*len(src) bytes).
func F32SliceToF16(dst []byte, src []float32) {
	_ = dst[2*len(src)-1]
	for i, f := range src {
		h := F32ToF16(f)
		dst[2*i], dst[2*i+1] = byte(h), byte(h>>8)
	}
}

// F32SliceToBF16 converts src to little-endian bfloat16 into dst (2*len(src) bytes).
func F32SliceToBF16(dst []byte, src []float32) {
	_ = dst[2*len(src)-1]
	for i, f := range src {
		h := F32ToBF16(f)
		dst[2*i], dst[2*i+1] = byte(h), byte(h>>8)
	}
}
