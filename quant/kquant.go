package quant

import "math"

// ---- Q4_K super-block (256 elements, 144 bytes):
//   d f16 | dmin f16 | scales[12] (8 x 6-bit scale + 8 x 6-bit min) | qs[128]
// Element 64*j+l (l<32) is the low nibble of qs[32*j+l], element 64*j+32+l the
// high nibble. Sub-block s (32 elements) decodes as d*sc[s]*q - dmin*m[s].

// q4kScaleMin extracts the 6-bit scale and min of sub-block j from the packed
// 12-byte array.
func q4kScaleMin(j int, q []byte) (sc, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return (q[j+4] & 0xf) | ((q[j-4] >> 6) << 4), (q[j+4] >> 4) | ((q[j] >> 6) << 4)
}

func dequantQ4KBlock(y []float32, b []byte) {
	d := getF16(b[0:])
	dmin := getF16(b[2:])
	scales := b[4:16]
	qs := b[16:144]
	for j := 0; j < 4; j++ {
		sc1, m1 := q4kScaleMin(2*j, scales)
		sc2, m2 := q4kScaleMin(2*j+1, scales)
		d1, dm1 := d*float32(sc1), dmin*float32(m1)
		d2, dm2 := d*float32(sc2), dmin*float32(m2)
		q := qs[32*j : 32*j+32]
		for l := 0; l < 32; l++ {
			// the conversions keep the products rounded (no fused
			// multiply-add), as the SIMD kernels compute them
			y[64*j+l] = float32(d1*float32(q[l]&0xf)) - dm1
			y[64*j+32+l] = float32(d2*float32(q[l]>>4)) - dm2
		}
	}
}

// fitScaleMin searches for scale s >= 0 and offset m <= 0 such that
// x ≈ s*L + m with integer L in [0, nmax], minimising the weighted squared
// error. It tries a range of candidate inverse scales around nmax/(max-min)
// and refits (s, m) by weighted least squares for each candidate's L.
// It returns s, -m and writes the chosen levels into L.
func fitScaleMin(x, w []float32, L []uint8, nmax int, rmin, rdelta float32, nstep int) (scale, negMin float32) {
	n := len(x)
	mn, mx := x[0], x[0]
	var sumW, sumX float32
	for i, v := range x {
		mn = min(mn, v)
		mx = max(mx, v)
		sumW += w[i]
		sumX += w[i] * v
	}
	if mn > 0 {
		mn = 0
	}
	if mx == mn {
		for i := range L[:n] {
			L[i] = 0
		}
		return 0, -mn
	}
	fn := float32(nmax)
	iscale := fn / (mx - mn)
	scale = 1 / iscale
	var bestErr float32
	for i, v := range x {
		l := clampInt(nearestInt(iscale*(v-mn)), 0, nmax)
		L[i] = uint8(l)
		diff := scale*float32(l) + mn - v
		bestErr += w[i] * diff * diff
	}
	var aux [32]uint8
	for is := 0; is <= nstep; is++ {
		iscale := (rmin + rdelta*float32(is) + fn) / (mx - mn)
		var sumL, sumL2, sumXL float32
		for i, v := range x {
			l := clampInt(nearestInt(iscale*(v-mn)), 0, nmax)
			aux[i] = uint8(l)
			fl := float32(l)
			sumL += w[i] * fl
			sumL2 += w[i] * fl * fl
			sumXL += w[i] * fl * v
		}
		D := sumW*sumL2 - sumL*sumL
		if D <= 0 {
			continue
		}
		s := (sumW*sumXL - sumX*sumL) / D
		m := (sumL2*sumX - sumL*sumXL) / D
		if m > 0 {
			m = 0
			s = sumXL / sumL2
		}
		var e float32
		for i, v := range x {
			diff := s*float32(aux[i]) + m - v
			e += w[i] * diff * diff
		}
		if e < bestErr {
			bestErr = e
			copy(L[:n], aux[:n])
			scale, mn = s, m
		}
	}
	return scale, -mn
}

func clampInt(v, lo, hi int) int {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

func quantizeQ4KBlock(dst []byte, x []float32) {
	var L [256]uint8
	var w [32]float32
	var scales, mins [8]float32
	var sumX2 float32
	for _, v := range x[:256] {
		sumX2 += v * v
	}
	avX := float32(math.Sqrt(float64(sumX2 / 256)))
	var maxScale, maxMin float32
	for j := 0; j < 8; j++ {
		xs := x[32*j : 32*j+32]
		for l, v := range xs {
			w[l] = avX + abs32(v)
		}
		scales[j], mins[j] = fitScaleMin(xs, w[:], L[32*j:32*j+32], 15, -1, 0.1, 20)
		maxScale = max(maxScale, scales[j])
		maxMin = max(maxMin, mins[j])
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxMin > 0 {
		invMin = 63 / maxMin
	}
	sc := dst[4:16]
	clear(sc)
	var ls, lm [8]int
	for j := 0; j < 8; j++ {
		ls[j] = min(63, nearestInt(invScale*scales[j]))
		lm[j] = min(63, nearestInt(invMin*mins[j]))
		if j < 4 {
			sc[j] = byte(ls[j])
			sc[j+4] = byte(lm[j])
		} else {
			sc[j+4] = byte(ls[j]&0xf) | byte(lm[j]&0xf)<<4
			sc[j-4] |= byte(ls[j]>>4) << 6
			sc[j] |= byte(lm[j]>>4) << 6
		}
	}
	putF16(dst[0:], maxScale/63)
	putF16(dst[2:], maxMin/63)
	d := getF16(dst[0:])
	dmin := getF16(dst[2:])
	for j := 0; j < 8; j++ {
		dj := d * float32(ls[j])
		if dj == 0 {
			continue
		}
		dm := dmin * float32(lm[j])
		for l := 0; l < 32; l++ {
			L[32*j+l] = uint8(clampInt(nearestInt((x[32*j+l]+dm)/dj), 0, 15))
		}
	}
	qs := dst[16:144]
	for j := 0; j < 4; j++ {
		for l := 0; l < 32; l++ {
			qs[32*j+l] = L[64*j+l] | L[64*j+32+l]<<4
		}
	}
}

// ---- Q6_K super-block (256 elements, 210 bytes):
//   ql[128] (low 4 bits) | qh[64] (high 2 bits) | scales[16] int8 | d f16
// Value = d * scales[s] * (q - 32) with 16 sub-blocks of 16.

func dequantQ6KBlock(y []float32, b []byte) {
	d := getF16(b[208:])
	for h := 0; h < 2; h++ {
		ql := b[64*h : 64*h+64]
		qh := b[128+32*h : 128+32*h+32]
		sc := b[192+8*h : 192+8*h+8]
		yy := y[128*h : 128*h+128]
		for l := 0; l < 32; l++ {
			is := l / 16
			q1 := int(ql[l]&0xf|(qh[l]>>0&3)<<4) - 32
			q2 := int(ql[l+32]&0xf|(qh[l]>>2&3)<<4) - 32
			q3 := int(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
			q4 := int(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
			yy[l] = d * float32(int8(sc[is])) * float32(q1)
			yy[l+32] = d * float32(int8(sc[is+2])) * float32(q2)
			yy[l+64] = d * float32(int8(sc[is+4])) * float32(q3)
			yy[l+96] = d * float32(int8(sc[is+6])) * float32(q4)
		}
	}
}

// fitSymScale finds a scale s such that x ≈ s*l with integer l in
// [-nmax, nmax-1], maximising the x²-weighted fit over a set of candidate
// inverse scales. Levels are written to L offset by nmax (0..2*nmax-1).
func fitSymScale(x []float32, L []int8, nmax int) float32 {
	var amax, max float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, max = a, v
		}
	}
	if amax < 1e-30 {
		for i := range x {
			L[i] = 0
		}
		return 0
	}
	fn := float32(nmax)
	var bestScale, best float32
	first := true
	var aux [16]int8
	for is := -9; is <= 9; is++ {
		iscale := -(fn + 0.1*float32(is)) / max
		var sumLX, sumL2 float32
		for i, v := range x {
			l := clampInt(nearestInt(iscale*v), -nmax, nmax-1)
			aux[i] = int8(l)
			w := v * v
			sumLX += w * v * float32(l)
			sumL2 += w * float32(l*l)
		}
		if sumL2 <= 0 {
			continue
		}
		if first || sumLX*sumLX > best*sumL2 {
			first = false
			bestScale = sumLX / sumL2
			best = bestScale * sumLX
			copy(L[:len(x)], aux[:len(x)])
		}
	}
	for i := range x {
		L[i] += int8(nmax)
	}
	return bestScale
}

func quantizeQ6KBlock(dst []byte, x []float32) {
	var L [256]int8
	var scales [16]float32
	var maxScale, maxAbs float32
	for ib := 0; ib < 16; ib++ {
		scales[ib] = fitSymScale(x[16*ib:16*ib+16], L[16*ib:16*ib+16], 32)
		if a := abs32(scales[ib]); a > maxAbs {
			maxAbs, maxScale = a, scales[ib]
		}
	}
	sc := dst[192:208]
	if maxAbs < 1e-30 {
		clear(dst[:210])
		return
	}
	iscale := -128 / maxScale
	putF16(dst[208:], 1/iscale)
	d := getF16(dst[208:])
	for ib := 0; ib < 16; ib++ {
		sc[ib] = byte(int8(min(127, nearestInt(iscale*scales[ib]))))
	}
	for ib := 0; ib < 16; ib++ {
		dj := d * float32(int8(sc[ib]))
		if dj == 0 {
			for l := 0; l < 16; l++ {
				L[16*ib+l] = 32
			}
			continue
		}
		for l := 0; l < 16; l++ {
			L[16*ib+l] = int8(clampInt(nearestInt(x[16*ib+l]/dj), -32, 31) + 32)
		}
	}
	for h := 0; h < 2; h++ {
		ql := dst[64*h : 64*h+64]
		qh := dst[128+32*h : 128+32*h+32]
		LL := L[128*h:]
		for l := 0; l < 32; l++ {
			q1 := uint8(LL[l])
			q2 := uint8(LL[l+32])
			q3 := uint8(LL[l+64])
			q4 := uint8(LL[l+96])
			ql[l] = q1&0xf | (q3&0xf)<<4
			ql[l+32] = q2&0xf | (q4&0xf)<<4
			qh[l] = q1>>4 | (q2>>4)<<2 | (q3>>4)<<4 | (q4>>4)<<6
		}
	}
}
