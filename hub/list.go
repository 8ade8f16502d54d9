package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxPages bounds how many pages of the tree listing are fetched.
const maxPages = 10000

// File is a regular file of a Hub repository.
type File struct {
	// Path is the slash-separated path of the file in the repository.
	Path string
	// Size is the size of the file content in bytes (for LFS files the size
	// of the LFS object, not of the pointer).
	Size int64
	// SHA256 is the lower-case hex SHA-256 of the content for LFS files
	// (the LFS object id), or "" when the Hub does not list one.
	SHA256 string
}

// treeEntry is one element of the Hub's tree API answer
// (GET /api/models/{repo}/tree/{rev}?recursive=true).
type treeEntry struct {
	Type string `json:"type"` // "file" or "directory"
	Oid  string `json:"oid"`  // git blob id
	Size int64  `json:"size"`
	Path string `json:"path"`
	LFS  *struct {
		Oid         string `json:"oid"` // sha256 of the content
		Size        int64  `json:"size"`
		PointerSize int64  `json:"pointerSize"`
	} `json:"lfs"`
}

// ListFiles lists the regular files of repo ("ORG/NAME") at revision rev
// (a branch, tag or commit; "" means DefaultRevision) with their sizes, using
// the Hub's recursive tree API and following its pagination (the RFC 8288
// Link header with rel="next"). Network errors and 5xx answers are retried
// c.Retries times.
func (c *Client) ListFiles(ctx context.Context, repo, rev string) ([]File, error) {
	if err := ValidateRepo(repo); err != nil {
		return nil, err
	}
	if rev == "" {
		rev = DefaultRevision
	}
	ep, err := c.endpointURL()
	if err != nil {
		return nil, err
	}
	next := ep.String() + "/api/models/" + repo + "/tree/" + url.PathEscape(rev) + "?recursive=true"
	var files []File
	seen := map[string]bool{}
	for page := 0; next != ""; page++ {
		if page >= maxPages {
			return nil, fmt.Errorf("hub: listing %s@%s: more than %d pages", repo, rev, maxPages)
		}
		if seen[next] {
			return nil, fmt.Errorf("hub: listing %s@%s: pagination loops at %s", repo, rev, next)
		}
		seen[next] = true
		entries, link, err := c.treePage(ctx, next)
		for attempt := 0; err != nil && isTransient(err) && attempt < c.Retries; attempt++ {
			if serr := sleepCtx(ctx, retryBackoff*time.Duration(attempt+1)); serr != nil {
				err = fmt.Errorf("%w (%w)", err, serr)
				break
			}
			entries, link, err = c.treePage(ctx, next)
		}
		if err != nil {
			return nil, fmt.Errorf("hub: listing files of %s@%s: %w", repo, rev, err)
		}
		for _, e := range entries {
			if e.Type != "file" {
				continue
			}
			f := File{Path: e.Path, Size: e.Size}
			if e.LFS != nil {
				f.Size = e.LFS.Size
				if isHexSHA256(e.LFS.Oid) {
					f.SHA256 = strings.ToLower(e.LFS.Oid)
				}
			}
			if f.Size < 0 {
				return nil, fmt.Errorf("hub: listing %s@%s: negative size for %q", repo, rev, e.Path)
			}
			files = append(files, f)
		}
		cur := next
		next = ""
		if link != "" {
			base, err := url.Parse(cur)
			if err != nil {
				return nil, fmt.Errorf("hub: listing %s@%s: %w", repo, rev, err)
			}
			nu, err := resolveRef(base, link)
			if err != nil {
				return nil, fmt.Errorf("hub: listing %s@%s: bad next-page link %q: %w", repo, rev, link, err)
			}
			next = nu
		}
	}
	return files, nil
}

// treePage fetches and decodes one page of the tree listing and returns the
// rel="next" link, if any.
func (c *Client) treePage(ctx context.Context, u string) ([]treeEntry, string, error) {
	hdr := http.Header{"Accept": {"application/json"}}
	resp, err := c.get(ctx, u, hdr)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("GET %s: unexpected status %s", u, resp.Status)
	}
	var entries []treeEntry
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
		return nil, "", &transientError{fmt.Errorf("GET %s: decoding tree listing: %w", u, err)}
	}
	return entries, nextLink(resp.Header.Values("Link")), nil
}

// nextLink returns the target of the rel="next" link in Link header values,
// or "".
func nextLink(values []string) string {
	for _, v := range values {
		for _, part := range splitLinks(v) {
			part = strings.TrimSpace(part)
			if !strings.HasPrefix(part, "<") {
				continue
			}
			end := strings.Index(part, ">")
			if end < 0 {
				continue
			}
			target := part[1:end]
			for _, param := range strings.Split(part[end+1:], ";") {
				k, v, ok := strings.Cut(strings.TrimSpace(param), "=")
				if !ok || !strings.EqualFold(strings.TrimSpace(k), "rel") {
					continue
				}
				for _, rel := range strings.Fields(strings.Trim(strings.TrimSpace(v), `"`)) {
					if strings.EqualFold(rel, "next") {
						return target
					}
				}
			}
		}
	}
	return ""
}

// splitLinks splits a Link header value at the commas that separate links
// (commas inside <...> or quotes are kept).
func splitLinks(v string) []string {
	var parts []string
	inURL, inQuote, start := false, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '<' && !inQuote:
			inURL = true
		case c == '>' && !inQuote:
			inURL = false
		case c == '"' && !inURL:
			inQuote = !inQuote
		case c == ',' && !inURL && !inQuote:
			parts = append(parts, v[start:i])
			start = i + 1
		}
	}
	return append(parts, v[start:])
}

// resolveRef resolves a possibly relative link against base.
func resolveRef(base *url.URL, ref string) (string, error) {
	r, err := url.Parse(ref)
	if err != nil {
		return "", err
	}
	u := base.ResolveReference(r)
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("unsupported scheme %q", u.Scheme)
	}
	return u.String(), nil
}

// isHexSHA256 reports whether s is 64 hex digits.
func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
			return false
		}
	}
	return true
}

// resolveURL returns the download URL of file in repo at rev.
func (c *Client) resolveURL(repo, rev, file string) (string, error) {
	ep, err := c.endpointURL()
	if err != nil {
		return "", err
	}
	segs := strings.Split(file, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return ep.String() + "/" + repo + "/resolve/" + url.PathEscape(rev) + "/" + strings.Join(segs, "/"), nil
}
