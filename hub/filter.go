package hub

import (
	"fmt"
	"path"
	"strings"
)

// DefaultInclude are the glob patterns selecting the files pulled when no
// include patterns are given: weights (safetensors, GGUF), configuration,
// tokenizer and generation files (JSON, SentencePiece/tiktoken models, text
// vocabularies) and chat templates (Jinja).
var DefaultInclude = []string{
	"*.safetensors",
	"*.gguf",
	"*.json",
	"*.jinja",
	"*.txt",
	"*.model",
	"*.tiktoken",
}

// Match reports whether the repository path p (slash-separated) matches one
// of the glob patterns (path.Match syntax). A pattern without '/' is matched
// against the file's base name, so "*.json" selects JSON files in every
// directory; a pattern with '/' is matched against the whole path; a pattern
// ending in '/' selects everything under that directory. Invalid patterns
// never match; check them with ValidatePatterns.
func Match(p string, patterns []string) bool {
	base := path.Base(p)
	for _, pat := range patterns {
		switch {
		case pat == "":
			continue
		case strings.HasSuffix(pat, "/"):
			if strings.HasPrefix(p, pat) {
				return true
			}
		case strings.Contains(pat, "/"):
			if ok, _ := path.Match(pat, p); ok {
				return true
			}
		default:
			if ok, _ := path.Match(pat, base); ok {
				return true
			}
		}
	}
	return false
}

// ValidatePatterns reports the first malformed glob pattern.
func ValidatePatterns(patterns []string) error {
	for _, pat := range patterns {
		if _, err := path.Match(strings.TrimSuffix(pat, "/"), ""); err != nil {
			return fmt.Errorf("hub: bad include pattern %q: %w", pat, err)
		}
	}
	return nil
}
