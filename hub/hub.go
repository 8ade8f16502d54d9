// Package hub downloads model repositories from the Hugging Face Hub.
//
// It lists a repository's files with the Hub's tree API, selects the ones an
// inference engine needs (weights, configuration, tokenizer and chat-template
// files by default) and downloads each of them through the "resolve" endpoint
// into a local directory. Downloads are written to "FILE.incomplete" first and
// renamed when complete, are resumed with an HTTP Range request when a partial
// file is found, and are verified against the size (and, for LFS files, the
// SHA-256) that the Hub lists.
package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultEndpoint is the Hub used when HF_ENDPOINT is not set.
const DefaultEndpoint = "https://huggingface.co"

// DefaultRevision is the revision pulled when none is given.
const DefaultRevision = "main"

// userAgent identifies ringo to the Hub.
const userAgent = "ringo-hub/1"

// maxRedirects bounds the redirect chain followed for a single request.
const maxRedirects = 10

// retryBackoff is the base delay between retries; the n-th retry waits n
// times this long. Tests shorten it.
var retryBackoff = time.Second

// Sentinel errors. Errors returned by this package wrap them, so callers can
// test with errors.Is.
var (
	// ErrAuth reports a 401 or 403 answer: the repository is private or
	// gated, or the token is missing, invalid or lacks access.
	ErrAuth = errors.New("authentication required or access denied")
	// ErrNotFound reports a 404 answer: the repository, revision or file
	// does not exist.
	ErrNotFound = errors.New("not found")
	// ErrSizeMismatch reports a downloaded file whose size differs from the
	// size listed by the Hub.
	ErrSizeMismatch = errors.New("size mismatch")
	// ErrChecksum reports a downloaded file whose SHA-256 differs from the
	// LFS object id listed by the Hub.
	ErrChecksum = errors.New("sha256 mismatch")
)

// Client talks to a Hugging Face Hub endpoint. The zero value is not ready
// for use: Endpoint must be set (NewClient does so). A Client is safe for
// concurrent use as long as its fields are not modified.
type Client struct {
	// Endpoint is the base URL of the Hub, such as "https://huggingface.co".
	Endpoint string
	// Token is a Hugging Face access token. When non-empty it is sent as
	// "Authorization: Bearer TOKEN" to Endpoint's host only, never to a
	// different host that a download is redirected to (a CDN).
	Token string
	// HTTP is the HTTP client used for requests; nil means
	// http.DefaultClient. Its CheckRedirect is not used: the Client follows
	// redirects itself so that it can decide where the token goes.
	HTTP *http.Client
	// Progress receives a progress bar per downloaded file; nil is silent.
	Progress io.Writer
	// Retries is how many times a failed file download is retried (resuming
	// where it stopped) after network errors or 5xx/429 answers. Zero means
	// no retry; NewClient sets 3.
	Retries int
}

// NewClient returns a Client configured from the environment: HF_ENDPOINT
// (default DefaultEndpoint) and HF_TOKEN, falling back to
// HUGGING_FACE_HUB_TOKEN. It retries failed downloads 3 times and is silent;
// set Progress to show progress bars.
func NewClient() *Client {
	endpoint := strings.TrimSpace(os.Getenv("HF_ENDPOINT"))
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	token := strings.TrimSpace(os.Getenv("HF_TOKEN"))
	if token == "" {
		token = strings.TrimSpace(os.Getenv("HUGGING_FACE_HUB_TOKEN"))
	}
	return &Client{
		Endpoint: strings.TrimRight(endpoint, "/"),
		Token:    token,
		HTTP:     &http.Client{},
		Retries:  3,
	}
}

// DefaultDir returns the directory a repository "ORG/NAME" is pulled into by
// default: $RINGO_HOME/models/ORG/NAME when RINGO_HOME is set, otherwise
// ~/.cache/ringo/models/ORG/NAME.
func DefaultDir(repo string) string {
	base := os.Getenv("RINGO_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil || home == "" {
			home = "."
		}
		base = filepath.Join(home, ".cache", "ringo")
	}
	return filepath.Join(base, "models", filepath.FromSlash(repo))
}

// ValidateRepo checks that repo has the form "ORG/NAME" with Hub-compatible
// characters (letters, digits, '-', '_', '.'), so that it is safe to use in
// URLs and as a relative directory.
func ValidateRepo(repo string) error {
	parts := strings.Split(repo, "/")
	if len(parts) != 2 {
		return fmt.Errorf("hub: invalid repository %q: want ORG/NAME", repo)
	}
	for _, p := range parts {
		if p == "" || p == "." || p == ".." || strings.HasPrefix(p, "-") || len(p) > 96 {
			return fmt.Errorf("hub: invalid repository %q: want ORG/NAME", repo)
		}
		for _, r := range p {
			ok := r == '-' || r == '_' || r == '.' ||
				(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
			if !ok {
				return fmt.Errorf("hub: invalid repository %q: character %q not allowed", repo, r)
			}
		}
	}
	return nil
}

// StatusError is an unexpected HTTP status answered by the Hub or its CDN.
// It wraps ErrAuth for 401 and 403 and ErrNotFound for 404 (and for a 401
// that the Hub marks as "repository not found", which is how it answers for
// private repositories without a token).
type StatusError struct {
	// URL is the requested URL (without query string).
	URL string
	// StatusCode is the HTTP status code.
	StatusCode int
	// Code is the Hub's X-Error-Code header, such as "RepoNotFound",
	// "RevisionNotFound", "EntryNotFound" or "GatedRepo", if present.
	Code string
	// Message is the Hub's error message, if any.
	Message string
	// HaveToken reports whether a token was sent.
	HaveToken bool
}

// Error describes the failure and, for authentication and not-found
// failures, what to do about it.
func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s: %d %s", e.URL, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" {
		fmt.Fprintf(&b, " (%s)", e.Message)
	}
	switch {
	case e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden:
		if e.HaveToken {
			b.WriteString(": the token in HF_TOKEN was rejected or has no access to this repository" +
				" (check the token, and for gated models accept the terms on the model page)")
		} else {
			b.WriteString(": the repository may be private or gated, or may not exist;" +
				" set HF_TOKEN to a Hugging Face access token (https://huggingface.co/settings/tokens)")
		}
	case e.StatusCode == http.StatusNotFound:
		switch e.Code {
		case "RevisionNotFound":
			b.WriteString(": revision not found")
		case "EntryNotFound":
			b.WriteString(": file not found in the repository")
		case "RepoNotFound":
			b.WriteString(": repository not found")
		default:
			b.WriteString(": repository, revision or file not found")
		}
	}
	return b.String()
}

// Unwrap returns the sentinel errors matching the status.
func (e *StatusError) Unwrap() []error {
	var errs []error
	if e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden {
		errs = append(errs, ErrAuth)
	}
	if e.StatusCode == http.StatusNotFound || e.Code == "RepoNotFound" || e.Code == "EntryNotFound" || e.Code == "RevisionNotFound" {
		errs = append(errs, ErrNotFound)
	}
	return errs
}

// retryable reports whether a request with this status may succeed later.
func (e *StatusError) retryable() bool {
	return e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests || e.StatusCode == http.StatusRequestTimeout
}

// newStatusError builds a StatusError from resp and closes its body.
func (c *Client) newStatusError(resp *http.Response, u *url.URL, sentToken bool) *StatusError {
	defer resp.Body.Close()
	e := &StatusError{
		URL:        redact(u),
		StatusCode: resp.StatusCode,
		Code:       resp.Header.Get("X-Error-Code"),
		Message:    resp.Header.Get("X-Error-Message"),
		HaveToken:  sentToken,
	}
	if e.Message == "" {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var j struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &j) == nil && j.Error != "" {
			e.Message = j.Error
		}
	}
	if len(e.Message) > 300 {
		e.Message = e.Message[:300] + "..."
	}
	return e
}

// redact returns u without its query string and user info (signed CDN URLs
// carry credentials in the query).
func redact(u *url.URL) string {
	v := *u
	v.RawQuery = ""
	v.ForceQuery = false
	v.Fragment = ""
	v.User = nil
	return v.String()
}

// endpointURL parses c.Endpoint.
func (c *Client) endpointURL() (*url.URL, error) {
	e := strings.TrimRight(c.Endpoint, "/")
	if e == "" {
		return nil, errors.New("hub: Client.Endpoint is empty")
	}
	u, err := url.Parse(e)
	if err != nil {
		return nil, fmt.Errorf("hub: invalid endpoint %q: %w", c.Endpoint, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("hub: invalid endpoint %q: want http(s)://host", c.Endpoint)
	}
	return u, nil
}

// httpClient returns a copy of c.HTTP that does not follow redirects.
func (c *Client) httpClient() *http.Client {
	var hc http.Client
	if c.HTTP != nil {
		hc = *c.HTTP
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &hc
}

// get performs a GET request for rawURL with the extra header hdr, following
// redirects (also to other hosts). The token is sent only to the endpoint's
// scheme and host. A non-2xx final answer is returned as a *StatusError;
// transport errors are wrapped with the URL. The caller closes the body.
func (c *Client) get(ctx context.Context, rawURL string, hdr http.Header) (*http.Response, error) {
	ep, err := c.endpointURL()
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("invalid URL %q: %w", rawURL, err)
	}
	hc := c.httpClient()
	for redirects := 0; ; redirects++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, fmt.Errorf("GET %s: %w", redact(u), err)
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		req.Header.Set("User-Agent", userAgent)
		sentToken := false
		if c.Token != "" && strings.EqualFold(u.Scheme, ep.Scheme) && strings.EqualFold(u.Host, ep.Host) {
			req.Header.Set("Authorization", "Bearer "+c.Token)
			sentToken = true
		}
		resp, err := hc.Do(req)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, &transientError{fmt.Errorf("GET %s: %w", redact(u), err)}
		}
		switch resp.StatusCode {
		case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
			http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			loc := resp.Header.Get("Location")
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if loc == "" {
				return nil, fmt.Errorf("GET %s: redirect %d without Location", redact(u), resp.StatusCode)
			}
			if redirects >= maxRedirects {
				return nil, fmt.Errorf("GET %s: more than %d redirects", rawURL, maxRedirects)
			}
			next, err := u.Parse(loc)
			if err != nil {
				return nil, fmt.Errorf("GET %s: bad redirect location %q: %w", redact(u), loc, err)
			}
			if next.Scheme != "http" && next.Scheme != "https" {
				return nil, fmt.Errorf("GET %s: redirect to unsupported URL %s", redact(u), redact(next))
			}
			u = next
			continue
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			if resp.StatusCode == http.StatusRequestedRangeNotSatisfiable {
				return resp, nil // handled by the caller
			}
			se := c.newStatusError(resp, u, sentToken)
			if se.retryable() {
				return nil, &transientError{se}
			}
			return nil, se
		}
		return resp, nil
	}
}

// transientError marks an error after which retrying may succeed.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// isTransient reports whether err may go away on retry. Context
// cancellation never does.
func isTransient(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var te *transientError
	return errors.As(err, &te)
}

// sleepCtx waits for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
