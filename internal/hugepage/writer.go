package hugepage

import "io"

// Writer buffers writes to a file and passes them on in pieces that end on
// multiples of Size of the file offset (a piece after a seek, or the first
// one after starting at an unaligned offset, is shorter). Linux caches a
// file written in whole, aligned 2 MiB pieces as 2 MiB folios, which a later
// memory mapping maps with huge pages: a model is fast to decode right after
// ringo wrote or downloaded it, without first leaving the page cache
// (io.Copy writes 32 KiB pieces, and bufio.Writer passes large writes on
// unaligned).
type Writer struct {
	w   io.Writer
	buf []byte
	off int64 // output offset of buf[0]
	err error
}

// NewWriter returns a Writer to w, whose next byte goes to file offset off.
// Call Flush at the end.
func NewWriter(w io.Writer, off int64) *Writer {
	return &Writer{w: w, off: off, buf: make([]byte, 0, Size)}
}

// Write implements io.Writer.
func (c *Writer) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if c.err != nil {
			return n, c.err
		}
		room := int(Size - (c.off+int64(len(c.buf)))%Size)
		k := min(room, len(p))
		c.buf = append(c.buf, p[:k]...)
		p, n = p[k:], n+k
		if k == room {
			c.Flush()
		}
	}
	return n, c.err
}

// Flush writes out what is buffered. After a failed write every call
// returns that error.
func (c *Writer) Flush() error {
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

// Seeked records that the output continues at offset off (after a seek of
// the underlying file); call Flush before seeking.
func (c *Writer) Seeked(off int64) { c.off = off }
