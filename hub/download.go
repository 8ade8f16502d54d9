package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ringo-ai/ringo/internal/hugepage"
	"github.com/schollz/progressbar/v3"
)

// incompleteSuffix is appended to a file's name while it is downloaded.
const incompleteSuffix = ".incomplete"

// Pull downloads the files of repo ("ORG/NAME") at revision rev ("" means
// DefaultRevision) whose paths match include (DefaultInclude when empty; see
// Match) into directory dest (DefaultDir(repo) when ""), keeping the
// repository's directory layout. Files already present with the listed size
// are skipped and partial downloads are resumed. Files are downloaded one
// after the other; the first failure stops the pull.
func (c *Client) Pull(ctx context.Context, repo, rev, dest string, include []string) error {
	if err := ValidateRepo(repo); err != nil {
		return err
	}
	if rev == "" {
		rev = DefaultRevision
	}
	if dest == "" {
		dest = DefaultDir(repo)
	}
	patterns := include
	if len(patterns) == 0 {
		patterns = DefaultInclude
	}
	if err := ValidatePatterns(patterns); err != nil {
		return err
	}
	files, err := c.ListFiles(ctx, repo, rev)
	if err != nil {
		return err
	}
	var selected []File
	var total int64
	for _, f := range files {
		if !Match(f.Path, patterns) {
			continue
		}
		if err := checkPath(f.Path); err != nil {
			return fmt.Errorf("hub: %s@%s: %w", repo, rev, err)
		}
		selected = append(selected, f)
		total += f.Size
	}
	if len(selected) == 0 {
		return fmt.Errorf("hub: none of the %d files of %s@%s matches %s", len(files), repo, rev, strings.Join(patterns, " "))
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return fmt.Errorf("hub: creating destination: %w", err)
	}
	c.notef("pulling %s@%s: %d files, %s, into %s\n", repo, rev, len(selected), formatBytes(total), dest)
	for _, f := range selected {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("hub: pulling %s: %w", repo, err)
		}
		if err := c.Download(ctx, repo, rev, f, dest); err != nil {
			return err
		}
	}
	return nil
}

// Pull downloads a repository with a Client from NewClient; see Client.Pull.
func Pull(ctx context.Context, repo, rev, dest string, include []string) error {
	return NewClient().Pull(ctx, repo, rev, dest, include)
}

// Download downloads one listed file of repo at rev into dest/f.Path. It
// skips the file when it already exists with size f.Size, writes to
// dest/f.Path.incomplete and resumes from a partial one with an HTTP Range
// request, verifies the size (and the SHA-256 when f.SHA256 is set), and
// renames the result into place. Network errors and 5xx answers are retried
// c.Retries times.
func (c *Client) Download(ctx context.Context, repo, rev string, f File, dest string) error {
	if err := ValidateRepo(repo); err != nil {
		return err
	}
	if rev == "" {
		rev = DefaultRevision
	}
	if err := checkPath(f.Path); err != nil {
		return fmt.Errorf("hub: %s@%s: %w", repo, rev, err)
	}
	if f.Size < 0 {
		return fmt.Errorf("hub: %s: unknown size", f.Path)
	}
	target := filepath.Join(dest, filepath.FromSlash(f.Path))
	if st, err := os.Stat(target); err == nil && st.Mode().IsRegular() && st.Size() == f.Size {
		c.notef("%s: already complete (%s)\n", f.Path, formatBytes(f.Size))
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("hub: downloading %s: %w", f.Path, err)
	}
	u, err := c.resolveURL(repo, rev, f.Path)
	if err != nil {
		return err
	}
	part := target + incompleteSuffix
	bar := c.newBar(f)
	for attempt := 0; ; attempt++ {
		err = c.fetch(ctx, u, part, f, bar)
		if err == nil {
			break
		}
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		if !isTransient(err) || attempt >= c.Retries {
			if bar != nil {
				_ = bar.Exit()
			}
			return fmt.Errorf("hub: downloading %s: %w", f.Path, err)
		}
		c.notef("\n%s: %v; retrying (%d/%d)\n", f.Path, err, attempt+1, c.Retries)
		if err := sleepCtx(ctx, retryBackoff*time.Duration(attempt+1)); err != nil {
			if bar != nil {
				_ = bar.Exit()
			}
			return fmt.Errorf("hub: downloading %s: %w", f.Path, err)
		}
	}
	if err := os.Rename(part, target); err != nil {
		return fmt.Errorf("hub: downloading %s: %w", f.Path, err)
	}
	if bar != nil {
		_ = bar.Finish()
	}
	return nil
}

// fetch brings part up to f.Size bytes, resuming from its current length,
// and verifies it. On a definite mismatch (size or checksum) part is removed;
// on transfer errors it is kept so that the next attempt resumes.
func (c *Client) fetch(ctx context.Context, u, part string, f File, bar *progressbar.ProgressBar) (err error) {
	fh, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	discard := false
	defer func() {
		if cerr := fh.Close(); cerr != nil && err == nil {
			err = cerr
		}
		if discard {
			os.Remove(part)
		}
	}()
	offset, err := fh.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	var h hash.Hash
	if f.SHA256 != "" {
		h = sha256.New()
	}
	restart := func() error {
		offset = 0
		if h != nil {
			h.Reset()
		}
		if bar != nil {
			_ = bar.Set64(0)
		}
		if err := fh.Truncate(0); err != nil {
			return err
		}
		_, err := fh.Seek(0, io.SeekStart)
		return err
	}
	if offset > f.Size {
		if err := restart(); err != nil {
			return err
		}
	}
	if offset > 0 && h != nil {
		// Hash the part already on disk so the final checksum covers it.
		if _, err := fh.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.Copy(h, io.LimitReader(ctxReader{ctx, fh}, offset)); err != nil {
			return fmt.Errorf("hashing %s: %w", part, err)
		}
	}
	if bar != nil {
		_ = bar.Set64(offset)
	}

	for offset < f.Size {
		hdr := http.Header{"Accept-Encoding": {"identity"}}
		if offset > 0 {
			hdr.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		}
		resp, err := c.get(ctx, u, hdr)
		if err != nil {
			return err
		}
		where := redact(resp.Request.URL)
		switch resp.StatusCode {
		case http.StatusPartialContent:
			start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
			if !ok || start != offset {
				// Not the range we asked for: start over without Range.
				resp.Body.Close()
				if err := restart(); err != nil {
					return err
				}
				continue
			}
			if total >= 0 && total != f.Size {
				resp.Body.Close()
				discard = true
				return fmt.Errorf("GET %s: server has %d bytes, the Hub lists %d: %w", where, total, f.Size, ErrSizeMismatch)
			}
		case http.StatusOK:
			if offset > 0 {
				// The server ignored the Range header: restart cleanly.
				if err := restart(); err != nil {
					resp.Body.Close()
					return err
				}
			}
		case http.StatusRequestedRangeNotSatisfiable:
			resp.Body.Close()
			if offset == 0 {
				return fmt.Errorf("GET %s: unexpected status %s", where, resp.Status)
			}
			if err := restart(); err != nil {
				return err
			}
			continue
		default:
			resp.Body.Close()
			return fmt.Errorf("GET %s: unexpected status %s", where, resp.Status)
		}
		if resp.ContentLength >= 0 && offset+resp.ContentLength != f.Size {
			resp.Body.Close()
			discard = true
			return fmt.Errorf("GET %s: server sends %d bytes, the Hub lists %d: %w", where, offset+resp.ContentLength, f.Size, ErrSizeMismatch)
		}
		if _, err := fh.Seek(offset, io.SeekStart); err != nil {
			resp.Body.Close()
			return err
		}
		// the file in aligned 2 MiB pieces, so that it is cached in 2 MiB
		// folios and mapped with huge pages when loaded (package hugepage)
		fw := hugepage.NewWriter(fh, offset)
		ws := []io.Writer{fw}
		if h != nil {
			ws = append(ws, h)
		}
		if bar != nil {
			ws = append(ws, bar)
		}
		// Read one byte more than expected to detect an overlong body.
		n, err := io.Copy(io.MultiWriter(ws...), io.LimitReader(resp.Body, f.Size-offset+1))
		resp.Body.Close()
		if ferr := fw.Flush(); ferr != nil {
			// what was counted may not all be in the file: the next attempt
			// resumes from the file's length and hashes it again
			return fmt.Errorf("write %s: %w", part, ferr)
		}
		offset += n
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return fmt.Errorf("GET %s: interrupted after %d of %d bytes: %w", where, offset, f.Size, cerr)
			}
			return &transientError{fmt.Errorf("GET %s: interrupted after %d of %d bytes: %w", where, offset, f.Size, err)}
		}
		if offset != f.Size {
			discard = true
			return fmt.Errorf("GET %s: got %d bytes, the Hub lists %d: %w", where, offset, f.Size, ErrSizeMismatch)
		}
	}
	if h != nil {
		if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
			discard = true
			return fmt.Errorf("%s: sha256 is %s, the Hub lists %s: %w", f.Path, got, f.SHA256, ErrChecksum)
		}
	}
	if err := fh.Sync(); err != nil {
		return err
	}
	return nil
}

// parseContentRange parses "bytes START-END/TOTAL" (TOTAL may be "*",
// returned as -1).
func parseContentRange(v string) (start, total int64, ok bool) {
	v, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(v, "/")
	if !found {
		return 0, 0, false
	}
	s, e, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	end, err2 := strconv.ParseInt(strings.TrimSpace(e), 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, false
	}
	total = -1
	if tot = strings.TrimSpace(tot); tot != "*" {
		t, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || t <= end {
			return 0, 0, false
		}
		total = t
	}
	return start, total, true
}

// checkPath rejects repository paths that would escape the destination
// directory or collide with the partial-download names.
func checkPath(p string) error {
	if p == "" || strings.Contains(p, "\\") || !filepath.IsLocal(filepath.FromSlash(p)) {
		return fmt.Errorf("unsafe file path %q", p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("unsafe file path %q", p)
		}
	}
	if strings.HasSuffix(p, incompleteSuffix) {
		return fmt.Errorf("file path %q collides with partial-download names", p)
	}
	return nil
}

// ctxReader is a reader that stops when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// newBar returns a progress bar for f writing to c.Progress, or nil.
func (c *Client) newBar(f File) *progressbar.ProgressBar {
	if c.Progress == nil || f.Size == 0 {
		return nil
	}
	w := c.Progress
	return progressbar.NewOptions64(f.Size,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(f.Path),
		progressbar.OptionShowBytes(true),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetWidth(25),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
}

// notef writes a message to c.Progress, if set.
func (c *Client) notef(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, format, args...)
	}
}

// formatBytes renders n with a binary unit.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
