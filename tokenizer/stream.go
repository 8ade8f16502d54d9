package tokenizer

// Decoder decodes a stream of token ids incrementally. Each Add returns
// only text that is complete: a trailing partial UTF-8 sequence is held
// back until the bytes that complete (or invalidate) it arrive. The
// concatenation of all Add results and the final Flush equals Decode of all
// ids. A Decoder is not safe for concurrent use.
type Decoder struct {
	t           *Tokenizer
	skipSpecial bool
	pending     []byte
}

// NewDecoder returns a streaming decoder that keeps special tokens.
func (t *Tokenizer) NewDecoder() *Decoder { return &Decoder{t: t} }

// NewDecoderSkipSpecial returns a streaming decoder that omits special
// tokens, matching Decode(ids, true).
func (t *Tokenizer) NewDecoderSkipSpecial() *Decoder { return &Decoder{t: t, skipSpecial: true} }

// SetSkipSpecial sets whether special tokens are omitted.
func (d *Decoder) SetSkipSpecial(skip bool) { d.skipSpecial = skip }

// Add appends one token and returns the text that became complete.
func (d *Decoder) Add(id int32) string {
	d.pending = d.t.appendTokenBytes(d.pending, id, d.skipSpecial)
	keep := incompleteTail(d.pending)
	cut := len(d.pending) - keep
	if cut == 0 {
		return ""
	}
	out := lossyUTF8(d.pending[:cut])
	n := copy(d.pending, d.pending[cut:])
	d.pending = d.pending[:n]
	return out
}

// Flush returns any held-back bytes (invalid ones replaced by U+FFFD) and
// resets the decoder.
func (d *Decoder) Flush() string {
	out := lossyUTF8(d.pending)
	d.pending = d.pending[:0]
	return out
}

// incompleteTail returns how many bytes at the end of b form a valid but
// incomplete UTF-8 sequence prefix (0 to 3).
func incompleteTail(b []byte) int {
	for k := 1; k <= 3 && k <= len(b); k++ {
		c := b[len(b)-k]
		if c < 0x80 {
			return 0
		}
		if c >= 0xC0 { // lead byte candidate
			need, lo, hi := seqInfo(c)
			if need == 0 || need < k {
				return 0
			}
			if need == k-1 {
				return 0 // complete (or invalid) sequence
			}
			// Check the continuation bytes present.
			for i := 1; i < k; i++ {
				cb := b[len(b)-k+i]
				l, h := byte(0x80), byte(0xBF)
				if i == 1 {
					l, h = lo, hi
				}
				if cb < l || cb > h {
					return 0
				}
			}
			return k
		}
	}
	return 0
}
