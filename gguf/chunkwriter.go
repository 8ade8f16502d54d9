package gguf

import (
	"io"

	"github.com/ringo-ai/ringo/internal/hugepage"
)

// chunkWriter buffers writes and passes them on in pieces that end on
// multiples of hugepage.Size of the output offset (a write after a seek is
// shorter, up to the next multiple). Linux caches a file written in whole,
// aligned 2 MiB pieces as 2 MiB folios, which a later memory mapping of the
// file maps with huge pages: a model is fast to decode right after `ringo
// quantize` wrote it, without first leaving the page cache (bufio.Writer
// would pass large writes on unaligned).
type chunkWriter struct {
	w   io.Writer
	buf []byte
	off int64 // output offset of buf[0]
	err error
}

func newChunkWriter(w io.Writer) *chunkWriter {
	return &chunkWriter{w: w, buf: make([]byte, 0, hugepage.Size)}
}

// Write implements io.Writer.
func (c *chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if c.err != nil {
			return n, c.err
		}
		room := int(hugepage.Size - (c.off+int64(len(c.buf)))%hugepage.Size)
		k := min(room, len(p))
		c.buf = append(c.buf, p[:k]...)
		p, n = p[k:], n+k
		if k == room {
			c.Flush()
		}
	}
	return n, c.err
}

// Flush writes out what is buffered.
func (c *chunkWriter) Flush() error {
	if c.err != nil || len(c.buf) == 0 {
		return c.err
	}
	m, err := c.w.Write(c.buf)
	if err == nil && m < len(c.buf) {
		err = io.ErrShortWrite
	}
	c.off += int64(m)
	c.buf, c.err = c.buf[:0], err
	return err
}

// seeked records that the output continues at offset off; the buffer must
// have been flushed.
func (c *chunkWriter) seeked(off int64) { c.off = off }
