// Package defaultmodel ships a tiny Ring-linear 2.0 model inside the binary
// (random weights, the Ling/Ring 2.0 tokenizer structure and chat template),
// so that every command works before any real model is downloaded.
package defaultmodel

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

//go:embed files
var files embed.FS

// Name is how the embedded model is reported (e.g. by /v1/models).
const Name = "ringo-tiny-random"

// Dir returns a directory holding the embedded model, writing it on first
// use under the user cache directory (or the temp dir).
func Dir() (string, error) {
	names, err := fs.Glob(files, "files/*")
	if err != nil {
		return "", err
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		b, _ := files.ReadFile(n)
		h.Write([]byte(n))
		h.Write(b)
	}
	sum := hex.EncodeToString(h.Sum(nil))[:16]
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "ringo", "default-"+sum)
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", fmt.Errorf("default model: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "default-tmp-")
	if err != nil {
		return "", fmt.Errorf("default model: %w", err)
	}
	for _, n := range names {
		b, _ := files.ReadFile(n)
		if err := os.WriteFile(filepath.Join(tmp, filepath.Base(n)), b, 0o644); err != nil {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("default model: %w", err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Stat(filepath.Join(dir, "config.json")); serr == nil {
			return dir, nil // another process won the race
		}
		return "", fmt.Errorf("default model: %w", err)
	}
	return dir, nil
}
