package hub

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func init() { retryBackoff = time.Millisecond }

const (
	testRepo  = "acme/tiny-model"
	testToken = "hf_secret"
)

// fakeHub imitates the Hub (tree API, resolve) and a CDN host that LFS
// downloads are redirected to.
type fakeHub struct {
	t        *testing.T
	hub, cdn *httptest.Server

	mu          sync.Mutex
	files       map[string][]byte // content served
	lfs         map[string]bool   // served through the CDN, listed with lfs.oid
	listedSize  map[string]int64  // overrides the listed size
	listedOid   map[string]string // overrides the listed lfs.oid
	listedExtra []string          // extra paths listed but not served
	pageSize    int
	truncate    map[string]int // next download of the file stops after N bytes
	ignoreRange bool
	hang        map[string]chan struct{} // send half, signal, then wait for cancel

	hubAuth  []string // Authorization headers received by the hub
	cdnAuth  []string // Authorization headers received by the CDN
	ranges   []string // Range headers received (hub and CDN)
	resolves int
	cdnGets  int
}

func newFakeHub(t *testing.T) *fakeHub {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	blob := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}
	f := &fakeHub{
		t: t,
		files: map[string][]byte{
			".gitattributes":                   []byte("*.safetensors filter=lfs\n"),
			"README.md":                        []byte("# tiny\n"),
			"config.json":                      []byte(`{"model_type":"bailing_moe_linear"}`),
			"generation_config.json":           []byte(`{"eos_token_id":1}`),
			"tokenizer.json":                   []byte(`{"model":{"type":"BPE"}}`),
			"chat_template.jinja":              []byte("{{ messages }}"),
			"sub/extra.json":                   []byte(`{}`),
			"model-00001-of-00002.safetensors": blob(300_000),
			"model-00002-of-00002.safetensors": blob(123_457),
			"pytorch_model.bin":                blob(1000),
			"model.safetensors.index.json":     []byte(`{"weight_map":{}}`),
		},
		lfs: map[string]bool{
			"model-00001-of-00002.safetensors": true,
			"model-00002-of-00002.safetensors": true,
			"pytorch_model.bin":                true,
		},
		listedSize: map[string]int64{},
		listedOid:  map[string]string{},
		pageSize:   4,
		truncate:   map[string]int{},
		hang:       map[string]chan struct{}{},
	}
	f.hub = httptest.NewServer(http.HandlerFunc(f.serveHub))
	f.cdn = httptest.NewServer(http.HandlerFunc(f.serveCDN))
	t.Cleanup(f.hub.Close)
	t.Cleanup(f.cdn.Close)
	return f
}

// client returns a client of the fake hub with the right token.
func (f *fakeHub) client() *Client {
	return &Client{Endpoint: f.hub.URL, Token: testToken, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

func (f *fakeHub) serveHub(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.hubAuth = append(f.hubAuth, r.Header.Get("Authorization"))
	f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+testToken {
		w.Header().Set("X-Error-Code", "RepoNotFound")
		w.Header().Set("X-Error-Message", "Invalid username or password.")
		http.Error(w, `{"error":"Invalid username or password."}`, http.StatusUnauthorized)
		return
	}
	treePrefix := "/api/models/" + testRepo + "/tree/main"
	resolvePrefix := "/" + testRepo + "/resolve/main/"
	switch {
	case r.URL.Path == treePrefix:
		if r.URL.Query().Get("recursive") != "true" {
			http.Error(w, "want recursive", http.StatusBadRequest)
			return
		}
		f.serveTree(w, r)
	case strings.HasPrefix(r.URL.Path, resolvePrefix):
		name := strings.TrimPrefix(r.URL.Path, resolvePrefix)
		f.mu.Lock()
		f.resolves++
		_, ok := f.files[name]
		lfs := f.lfs[name]
		f.mu.Unlock()
		if !ok {
			w.Header().Set("X-Error-Code", "EntryNotFound")
			http.Error(w, "Entry not found", http.StatusNotFound)
			return
		}
		if lfs {
			// Like the Hub: a relative hop first, then the signed CDN URL.
			if r.URL.Query().Get("hop") == "" {
				http.Redirect(w, r, r.URL.Path+"?hop=1", http.StatusTemporaryRedirect)
				return
			}
			http.Redirect(w, r, f.cdn.URL+"/blobs/"+name+"?X-Amz-Signature=abc", http.StatusFound)
			return
		}
		f.serveContent(w, r, name)
	case strings.HasPrefix(r.URL.Path, "/api/models/"):
		w.Header().Set("X-Error-Code", "RepoNotFound")
		http.Error(w, `{"error":"Repository not found"}`, http.StatusNotFound)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeHub) serveCDN(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.cdnAuth = append(f.cdnAuth, r.Header.Get("Authorization"))
	f.cdnGets++
	f.mu.Unlock()
	if r.URL.Query().Get("X-Amz-Signature") != "abc" {
		http.Error(w, "bad signature", http.StatusForbidden)
		return
	}
	f.serveContent(w, r, strings.TrimPrefix(r.URL.Path, "/blobs/"))
}

func (f *fakeHub) serveTree(w http.ResponseWriter, r *http.Request) {
	type lfsInfo struct {
		Oid         string `json:"oid"`
		Size        int64  `json:"size"`
		PointerSize int    `json:"pointerSize"`
	}
	type entry struct {
		Type string   `json:"type"`
		Oid  string   `json:"oid"`
		Size int64    `json:"size"`
		Path string   `json:"path"`
		LFS  *lfsInfo `json:"lfs,omitempty"`
	}
	f.mu.Lock()
	var names []string
	for name := range f.files {
		names = append(names, name)
	}
	names = append(names, f.listedExtra...)
	sort.Strings(names)
	var all []entry
	dirs := map[string]bool{}
	for _, name := range names {
		if d, _, ok := strings.Cut(name, "/"); ok && !dirs[d] {
			dirs[d] = true
			all = append(all, entry{Type: "directory", Oid: "0", Path: d})
		}
		data := f.files[name]
		size := int64(len(data))
		if s, ok := f.listedSize[name]; ok {
			size = s
		}
		e := entry{Type: "file", Oid: "deadbeef", Size: size, Path: name}
		if f.lfs[name] {
			sum := sha256.Sum256(data)
			oid := hex.EncodeToString(sum[:])
			if o, ok := f.listedOid[name]; ok {
				oid = o
			}
			e.LFS = &lfsInfo{Oid: oid, Size: size, PointerSize: 134}
		}
		all = append(all, e)
	}
	pageSize := f.pageSize
	f.mu.Unlock()

	cursor, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
	end := min(cursor+pageSize, len(all))
	if end < len(all) {
		next := fmt.Sprintf("%s/api/models/%s/tree/main?recursive=true&cursor=%d", f.hub.URL, testRepo, end)
		if cursor > 0 {
			// Relative link on later pages, plus another relation.
			next = fmt.Sprintf("/api/models/%s/tree/main?recursive=true&cursor=%d", testRepo, end)
		}
		w.Header().Set("Link", fmt.Sprintf(`<https://example.invalid/x>; rel="prev", <%s>; rel="next"`, next))
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(all[cursor:end])
}

// serveContent serves a file with Range support, truncation and hanging.
func (f *fakeHub) serveContent(w http.ResponseWriter, r *http.Request, name string) {
	f.mu.Lock()
	data, ok := f.files[name]
	cut, truncate := f.truncate[name]
	delete(f.truncate, name)
	hang := f.hang[name]
	delete(f.hang, name)
	ignoreRange := f.ignoreRange
	if rg := r.Header.Get("Range"); rg != "" {
		f.ranges = append(f.ranges, name+" "+rg)
	}
	f.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	start := 0
	status := http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" && !ignoreRange {
		s, found := strings.CutPrefix(rg, "bytes=")
		s, found2 := strings.CutSuffix(s, "-")
		n, err := strconv.Atoi(s)
		if !found || !found2 || err != nil {
			http.Error(w, "bad range", http.StatusBadRequest)
			return
		}
		if n >= len(data) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(data)))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start = n
		status = http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", n, len(data)-1, len(data)))
	}
	body := data[start:]
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(status)
	switch {
	case hang != nil:
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		close(hang)
		<-r.Context().Done()
		panic(http.ErrAbortHandler)
	case truncate:
		w.Write(body[:cut])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drop the connection mid-body
	default:
		w.Write(body)
	}
}

// wantDefault are the files selected by DefaultInclude.
var wantDefault = []string{
	"chat_template.jinja",
	"config.json",
	"generation_config.json",
	"model-00001-of-00002.safetensors",
	"model-00002-of-00002.safetensors",
	"model.safetensors.index.json",
	"sub/extra.json",
	"tokenizer.json",
}

// listDir returns the slash-separated paths of the files under dir.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	var got []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			got = append(got, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	return got
}

func (f *fakeHub) checkFiles(t *testing.T, dir string, want []string) {
	t.Helper()
	if got := listDir(t, dir); !slices.Equal(got, want) {
		t.Fatalf("files in %s:\n got %q\nwant %q", dir, got, want)
	}
	for _, name := range want {
		got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, f.files[name]) {
			t.Fatalf("%s: content differs (%d bytes, want %d)", name, len(got), len(f.files[name]))
		}
	}
}

func TestPull(t *testing.T) {
	f := newFakeHub(t)
	dir := t.TempDir()
	c := f.client()
	var progress bytes.Buffer
	c.Progress = &progress
	if err := c.Pull(context.Background(), testRepo, "", dir, nil); err != nil {
		t.Fatal(err)
	}
	f.checkFiles(t, dir, wantDefault)
	f.mu.Lock()
	for i, a := range f.hubAuth {
		if a != "Bearer "+testToken {
			t.Errorf("hub request %d: Authorization %q", i, a)
		}
	}
	if f.cdnGets != 2 {
		t.Errorf("CDN got %d requests, want 2", f.cdnGets)
	}
	for i, a := range f.cdnAuth {
		if a != "" {
			t.Errorf("CDN request %d: Authorization leaked: %q", i, a)
		}
	}
	if len(f.ranges) != 0 {
		t.Errorf("unexpected Range requests: %q", f.ranges)
	}
	resolves := f.resolves
	f.mu.Unlock()
	if !strings.Contains(progress.String(), "model-00001-of-00002.safetensors") {
		t.Errorf("progress output lacks the file name: %q", progress.String())
	}

	// A second pull finds everything complete and downloads nothing.
	progress.Reset()
	if err := c.Pull(context.Background(), testRepo, "main", dir, nil); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.resolves != resolves {
		t.Errorf("second pull made %d resolve requests", f.resolves-resolves)
	}
	if !strings.Contains(progress.String(), "already complete") {
		t.Errorf("progress output: %q", progress.String())
	}
}

func TestPullDefaultDir(t *testing.T) {
	f := newFakeHub(t)
	home := t.TempDir()
	t.Setenv("RINGO_HOME", home)
	if err := f.client().Pull(context.Background(), testRepo, "main", "", []string{"config.json"}); err != nil {
		t.Fatal(err)
	}
	f.checkFiles(t, filepath.Join(home, "models", "acme", "tiny-model"), []string{"config.json"})
}

func TestPullInclude(t *testing.T) {
	f := newFakeHub(t)
	for _, tc := range []struct {
		include []string
		want    []string
	}{
		{[]string{"*.safetensors"}, []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}},
		{[]string{"sub/"}, []string{"sub/extra.json"}},
		{[]string{"sub/*.json", "README.md", "*.bin"}, []string{"README.md", "pytorch_model.bin", "sub/extra.json"}},
	} {
		dir := t.TempDir()
		if err := f.client().Pull(context.Background(), testRepo, "main", dir, tc.include); err != nil {
			t.Fatalf("%q: %v", tc.include, err)
		}
		f.checkFiles(t, dir, tc.want)
	}
	err := f.client().Pull(context.Background(), testRepo, "main", t.TempDir(), []string{"*.nothing"})
	if err == nil || !strings.Contains(err.Error(), "matches") {
		t.Errorf("no match: err = %v", err)
	}
	err = f.client().Pull(context.Background(), testRepo, "main", t.TempDir(), []string{"[bad"})
	if err == nil || !strings.Contains(err.Error(), "pattern") {
		t.Errorf("bad pattern: err = %v", err)
	}
}

func TestSizeMismatch(t *testing.T) {
	f := newFakeHub(t)
	f.listedSize["config.json"] = int64(len(f.files["config.json"]) + 5)
	dir := t.TempDir()
	err := f.client().Pull(context.Background(), testRepo, "main", dir, []string{"config.json"})
	if !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("err = %v, want ErrSizeMismatch", err)
	}
	if !strings.Contains(err.Error(), "config.json") {
		t.Errorf("error does not name the file: %v", err)
	}
	if got := listDir(t, dir); len(got) != 0 {
		t.Errorf("left files behind: %q", got)
	}

	// A listed size smaller than the content (through the CDN).
	name := "model-00002-of-00002.safetensors"
	f.listedSize[name] = 1000
	err = f.client().Pull(context.Background(), testRepo, "main", dir, []string{name})
	if !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("err = %v, want ErrSizeMismatch", err)
	}
	if got := listDir(t, dir); len(got) != 0 {
		t.Errorf("left files behind: %q", got)
	}
}

func TestChecksumMismatch(t *testing.T) {
	f := newFakeHub(t)
	name := "model-00002-of-00002.safetensors"
	f.listedOid[name] = strings.Repeat("ab", 32)
	dir := t.TempDir()
	err := f.client().Pull(context.Background(), testRepo, "main", dir, []string{name})
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("err = %v, want ErrChecksum", err)
	}
	if got := listDir(t, dir); len(got) != 0 {
		t.Errorf("left files behind: %q", got)
	}
}

func TestResumeAfterInterruption(t *testing.T) {
	f := newFakeHub(t)
	name := "model-00001-of-00002.safetensors"
	f.truncate[name] = 100_000
	dir := t.TempDir()
	c := f.client() // Retries: 0
	err := c.Pull(context.Background(), testRepo, "main", dir, []string{name})
	if err == nil {
		t.Fatal("interrupted download succeeded")
	}
	if errors.Is(err, ErrSizeMismatch) || !strings.Contains(err.Error(), "/blobs/"+name) {
		t.Errorf("err = %v, want a transfer error naming the CDN URL", err)
	}
	if strings.Contains(err.Error(), "X-Amz-Signature") {
		t.Errorf("error leaks the signed query: %v", err)
	}
	part := filepath.Join(dir, name+".incomplete")
	st, err := os.Stat(part)
	if err != nil {
		t.Fatalf("partial file: %v", err)
	}
	n := st.Size()
	if n <= 0 || n > 100_000 {
		t.Fatalf("partial file has %d bytes", n)
	}
	if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
		t.Fatalf("final file exists after interruption: %v", err)
	}

	if err := c.Pull(context.Background(), testRepo, "main", dir, []string{name}); err != nil {
		t.Fatal(err)
	}
	f.checkFiles(t, dir, []string{name})
	f.mu.Lock()
	defer f.mu.Unlock()
	want := []string{fmt.Sprintf("%s bytes=%d-", name, n)}
	if !slices.Equal(f.ranges, want) {
		t.Errorf("Range requests %q, want %q", f.ranges, want)
	}
	for _, a := range f.cdnAuth {
		if a != "" {
			t.Errorf("CDN got Authorization %q", a)
		}
	}
}

func TestResumeWithRetry(t *testing.T) {
	f := newFakeHub(t)
	name := "config.json" // served by the hub itself, with the token
	f.truncate[name] = 10
	big := "model-00002-of-00002.safetensors"
	f.truncate[big] = 50_000
	dir := t.TempDir()
	c := f.client()
	c.Retries = 2
	var progress bytes.Buffer
	c.Progress = &progress
	if err := c.Pull(context.Background(), testRepo, "main", dir, []string{name, big}); err != nil {
		t.Fatal(err)
	}
	f.checkFiles(t, dir, []string{name, big})
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.ranges) != 2 {
		t.Errorf("Range requests %q, want one per file", f.ranges)
	}
	if !strings.Contains(progress.String(), "retrying") {
		t.Errorf("progress output does not mention the retry: %q", progress.String())
	}
}

func TestResumeServerIgnoresRange(t *testing.T) {
	f := newFakeHub(t)
	f.ignoreRange = true
	name := "model-00002-of-00002.safetensors"
	dir := t.TempDir()
	// A stale partial file with wrong bytes: the 200 answer must replace it.
	if err := os.WriteFile(filepath.Join(dir, name+".incomplete"), bytes.Repeat([]byte{'x'}, 5000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.client().Pull(context.Background(), testRepo, "main", dir, []string{name}); err != nil {
		t.Fatal(err)
	}
	f.checkFiles(t, dir, []string{name})
	if len(f.ranges) != 1 {
		t.Errorf("Range requests %q, want 1", f.ranges)
	}
}

func TestResumeOversizedPartial(t *testing.T) {
	f := newFakeHub(t)
	name := "config.json"
	dir := t.TempDir()
	// Longer than the file: discarded, downloaded from scratch.
	if err := os.WriteFile(filepath.Join(dir, name+".incomplete"), bytes.Repeat([]byte{'x'}, 500), 0o644); err != nil {
		t.Fatal(err)
	}
	// Wrong size on disk: downloaded again.
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte("short"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.client().Pull(context.Background(), testRepo, "main", dir, []string{name, "tokenizer.json"}); err != nil {
		t.Fatal(err)
	}
	f.checkFiles(t, dir, []string{name, "tokenizer.json"})
	if len(f.ranges) != 0 {
		t.Errorf("Range requests %q, want none", f.ranges)
	}
}

func TestCompletePartial(t *testing.T) {
	// A partial file that already has every byte is verified and renamed
	// without downloading.
	f := newFakeHub(t)
	name := "model-00002-of-00002.safetensors"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name+".incomplete"), f.files[name], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.client().Pull(context.Background(), testRepo, "main", dir, []string{name}); err != nil {
		t.Fatal(err)
	}
	f.checkFiles(t, dir, []string{name})
	if f.cdnGets != 0 {
		t.Errorf("CDN got %d requests, want 0", f.cdnGets)
	}
}

func TestAuthErrors(t *testing.T) {
	f := newFakeHub(t)
	for _, token := range []string{"", "hf_wrong"} {
		c := f.client()
		c.Token = token
		err := c.Pull(context.Background(), testRepo, "main", t.TempDir(), nil)
		if !errors.Is(err, ErrAuth) {
			t.Fatalf("token %q: err = %v, want ErrAuth", token, err)
		}
		if !strings.Contains(err.Error(), "HF_TOKEN") || !strings.Contains(err.Error(), "401") {
			t.Errorf("token %q: error does not explain: %v", token, err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hubAuth[0] != "" || f.hubAuth[len(f.hubAuth)-1] != "Bearer hf_wrong" {
		t.Errorf("Authorization headers sent: %q", f.hubAuth)
	}
}

func TestNotFound(t *testing.T) {
	f := newFakeHub(t)
	c := f.client()
	err := c.Pull(context.Background(), "acme/missing", "main", t.TempDir(), nil)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("missing repo: err = %v", err)
	}
	if !strings.Contains(err.Error(), "acme/missing") {
		t.Errorf("error does not name the repository: %v", err)
	}

	f.listedExtra = []string{"ghost.json"}
	f.listedSize["ghost.json"] = 10
	err = c.Pull(context.Background(), testRepo, "main", t.TempDir(), []string{"ghost.json"})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "file not found") {
		t.Fatalf("missing file: err = %v", err)
	}
}

func TestNetworkErrorNamesURL(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	endpoint := srv.URL
	srv.Close() // nothing listens there any more
	c := &Client{Endpoint: endpoint}
	err := c.Pull(context.Background(), testRepo, "main", t.TempDir(), nil)
	if err == nil || !strings.Contains(err.Error(), endpoint+"/api/models/"+testRepo+"/tree/main") {
		t.Fatalf("err = %v, want it to name the URL", err)
	}
}

func TestServerErrorRetried(t *testing.T) {
	var calls int
	var mu sync.Mutex
	f := newFakeHub(t)
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		f.serveHub(w, r)
	}))
	defer flaky.Close()
	f.pageSize = 100 // the fake's absolute next-page links point at f.hub
	c := f.client()
	c.Endpoint = flaky.URL
	c.Retries = 1
	if _, err := c.ListFiles(context.Background(), testRepo, "main"); err != nil {
		t.Fatal(err)
	}
	c.Retries = 0
	calls = 0
	_, err := c.ListFiles(context.Background(), testRepo, "main")
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("err = %v, want 503", err)
	}
}

func TestCancel(t *testing.T) {
	f := newFakeHub(t)
	name := "model-00001-of-00002.safetensors"
	sent := make(chan struct{})
	f.hang[name] = sent
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-sent
		time.Sleep(50 * time.Millisecond)
		cancel()
	}()
	dir := t.TempDir()
	c := f.client()
	c.Retries = 3
	err := c.Pull(ctx, testRepo, "main", dir, []string{name})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, err := os.Stat(filepath.Join(dir, name+".incomplete")); err != nil {
		t.Errorf("partial file not kept: %v", err)
	}
	// Resume it.
	if err := c.Pull(context.Background(), testRepo, "main", dir, []string{name}); err != nil {
		t.Fatal(err)
	}
	f.checkFiles(t, dir, []string{name})
}

func TestUnsafePath(t *testing.T) {
	f := newFakeHub(t)
	f.listedExtra = []string{"../evil.json"}
	dir := t.TempDir()
	err := f.client().Pull(context.Background(), testRepo, "main", filepath.Join(dir, "m"), nil)
	if err == nil || !strings.Contains(err.Error(), "unsafe") {
		t.Fatalf("err = %v, want unsafe path error", err)
	}
	if got := listDir(t, dir); len(got) != 0 {
		t.Errorf("wrote files: %q", got)
	}
}

func TestListFiles(t *testing.T) {
	f := newFakeHub(t)
	f.pageSize = 2
	files, err := f.client().ListFiles(context.Background(), testRepo, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(f.files) {
		t.Fatalf("got %d files, want %d: %+v", len(files), len(f.files), files)
	}
	for _, fl := range files {
		data := f.files[fl.Path]
		if fl.Size != int64(len(data)) {
			t.Errorf("%s: size %d, want %d", fl.Path, fl.Size, len(data))
		}
		if f.lfs[fl.Path] {
			sum := sha256.Sum256(data)
			if fl.SHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("%s: sha256 %q", fl.Path, fl.SHA256)
			}
		} else if fl.SHA256 != "" {
			t.Errorf("%s: non-LFS file has sha256 %q", fl.Path, fl.SHA256)
		}
	}
}

func TestNewClient(t *testing.T) {
	t.Setenv("HF_ENDPOINT", "https://mirror.example/")
	t.Setenv("HF_TOKEN", "")
	t.Setenv("HUGGING_FACE_HUB_TOKEN", "old")
	c := NewClient()
	if c.Endpoint != "https://mirror.example" || c.Token != "old" || c.Retries != 3 || c.Progress != nil {
		t.Errorf("NewClient() = %+v", c)
	}
	t.Setenv("HF_TOKEN", "new")
	t.Setenv("HF_ENDPOINT", "")
	c = NewClient()
	if c.Endpoint != DefaultEndpoint || c.Token != "new" {
		t.Errorf("NewClient() = %+v", c)
	}
}

func TestDefaultDir(t *testing.T) {
	t.Setenv("RINGO_HOME", "/opt/ringo")
	if got, want := DefaultDir("inclusionAI/Ring-mini-linear-2.0"), filepath.FromSlash("/opt/ringo/models/inclusionAI/Ring-mini-linear-2.0"); got != want {
		t.Errorf("DefaultDir = %q, want %q", got, want)
	}
	t.Setenv("RINGO_HOME", "")
	t.Setenv("HOME", "/home/u")
	if got, want := DefaultDir("a/b"), filepath.FromSlash("/home/u/.cache/ringo/models/a/b"); got != want {
		t.Errorf("DefaultDir = %q, want %q", got, want)
	}
}

func TestValidateRepo(t *testing.T) {
	for _, ok := range []string{"inclusionAI/Ling-mini-2.0", "a/b", "A_b/c.d-e"} {
		if err := ValidateRepo(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "gpt2", "a/b/c", "../b", "a/..", "a/b c", "a/", "/b", "a/b?x", "-a/b"} {
		if err := ValidateRepo(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"config.json", true},
		{"sub/x.json", true},
		{"model-00001-of-00042.safetensors", true},
		{"tokenizer.model", true},
		{"chat_template.jinja", true},
		{"merges.txt", true},
		{"q4/model-Q4_K_M.gguf", true},
		{"README.md", false},
		{".gitattributes", false},
		{"pytorch_model.bin", false},
		{"modeling_bailing.py", false},
	} {
		if got := Match(tc.path, DefaultInclude); got != tc.want {
			t.Errorf("Match(%q, default) = %v", tc.path, got)
		}
	}
	if Match("a/b.json", []string{"b.json/"}) || !Match("a/b.json", []string{"a/"}) || Match("x/a/b.json", []string{"a/*.json"}) {
		t.Error("directory patterns")
	}
}

func TestNextLink(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{`<https://huggingface.co/api/models/a/b/tree/main?recursive=true&cursor=abc>; rel="next"`}, "https://huggingface.co/api/models/a/b/tree/main?recursive=true&cursor=abc"},
		{[]string{`<a>; rel="prev", <b,c>; rel="next"`}, "b,c"},
		{[]string{`<a>; rel="prev"`, `<b>; rel=next`}, "b"},
		{[]string{`<a>; title="x, y"; rel="last"`}, ""},
	} {
		if got := nextLink(tc.in); got != tc.want {
			t.Errorf("nextLink(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 100-199/200", 100, 200, true},
		{"bytes 0-0/*", 0, -1, true},
		{"bytes 100-199/150", 0, 0, false},
		{"bytes */200", 0, 0, false},
		{"items 1-2/3", 0, 0, false},
		{"", 0, 0, false},
	} {
		s, tot, ok := parseContentRange(tc.in)
		if ok != tc.ok || ok && (s != tc.start || tot != tc.total) {
			t.Errorf("parseContentRange(%q) = %d, %d, %v", tc.in, s, tot, ok)
		}
	}
}

func TestStatusErrorMessages(t *testing.T) {
	e := &StatusError{URL: "https://h/x", StatusCode: 403, HaveToken: true}
	if !strings.Contains(e.Error(), "HF_TOKEN") || !errors.Is(e, ErrAuth) || errors.Is(e, ErrNotFound) {
		t.Errorf("403: %v", e)
	}
	e = &StatusError{URL: "https://h/x", StatusCode: 404, Code: "RevisionNotFound"}
	if !strings.Contains(e.Error(), "revision not found") || !errors.Is(e, ErrNotFound) {
		t.Errorf("404: %v", e)
	}
}
