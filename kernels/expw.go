package kernels

import "math"

// ExpNeg returns e^x in float32 for −87 < x ≤ 0, within about two float32
// units in the last place of math.Exp, at a fraction of its cost. x = k·ln 2
// + r with |r| ≤ ln 2 / 2 (k rounded by adding 1.5·2^23, ln 2 in two parts
// so that k·ln 2 loses nothing), e^r from Cephes' expf polynomial, then 2^k
// from the exponent bits. Every product is rounded to float32 before it is
// added (the explicit conversions), so that no platform fuses them into
// FMAs: the results are the same everywhere, and ExpWeights' assembly
// computes exactly these.
func ExpNeg(x float32) float32 {
	t := float32(x*enLog2e) + enMagic
	k := t - enMagic
	r := x - float32(k*enLn2hi)
	r -= float32(k * enLn2lo)
	p := float32(enP0*r) + enP1
	p = float32(p*r) + enP2
	p = float32(p*r) + enP3
	p = float32(p*r) + enP4
	p = float32(p*r) + enP5
	p = float32(float32(p*float32(r*r))+r) + 1
	return float32(p * math.Float32frombits((math.Float32bits(t)+127)<<23)) // 2^k: k + 127 in the exponent (the low bits of t)
}

// ExpNeg's constants (float32; the assembly's expwconst holds their bits).
const (
	enLog2e float32 = 1.44269504088896341
	enMagic float32 = 12582912 // 1.5·2^23: adding it rounds to an integer, k in the low bits
	enLn2hi float32 = 0.693359375
	enLn2lo float32 = -2.12194440e-4
	enP0    float32 = 1.9875691500e-4
	enP1    float32 = 1.3981999507e-3
	enP2    float32 = 8.3334519073e-3
	enP3    float32 = 4.1665795894e-2
	enP4    float32 = 1.6666665459e-1
	enP5    float32 = 5.0000001201e-1
)

// ExpWeights stores in e[i] the weight ExpNeg(x[i] − mx) of each x[i] ≥ lo
// and 0 for the others (lo ≥ mx − 87, mx ≥ every x[i]; e and x of the same
// length), and returns their sums in float64 by lanes: z[j] adds the
// weights of i ≡ j (mod 4) in order of i. The weights and the sums are the
// same with and without the assembly (eight weights at a time), so callers
// that add the lanes in a fixed order get the same total everywhere.
func ExpWeights(e, x []float32, mx, lo float32) (z [4]float64) {
	n := min(len(e), len(x))
	i := 0
	if useAsm && n >= 8 {
		i = n &^ 7
		expWeightsAsm(&e[0], &x[0], i, mx, lo, &z)
	}
	for ; i < n; i++ {
		var q float32
		if v := x[i]; v >= lo {
			q = ExpNeg(v - mx)
		}
		e[i] = q
		z[i&3] += float64(q)
	}
	return z
}
