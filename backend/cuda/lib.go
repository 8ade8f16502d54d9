package cuda

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// LibPathEnv lists extra directories (colon-separated) searched for the CUDA
// libraries (libnvrtc, libcublasLt) before the usual places.
const LibPathEnv = "RINGO_CUDA_LIB_PATH"

// lib is a dynamically loaded shared library.
type lib struct {
	path string
	h    uintptr
}

// libDirs returns the directories searched for CUDA toolkit libraries.
func libDirs() []string {
	var dirs []string
	for _, env := range []string{LibPathEnv, "LD_LIBRARY_PATH"} {
		for _, d := range strings.Split(os.Getenv(env), ":") {
			if d != "" {
				dirs = append(dirs, d)
			}
		}
	}
	if p := os.Getenv("CUDA_PATH"); p != "" {
		dirs = append(dirs, filepath.Join(p, "lib64"), filepath.Join(p, "lib"))
	}
	if p := os.Getenv("CUDA_HOME"); p != "" {
		dirs = append(dirs, filepath.Join(p, "lib64"), filepath.Join(p, "lib"))
	}
	dirs = append(dirs, "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/local/cuda/targets/sbsa-linux/lib")
	if m, _ := filepath.Glob("/usr/local/cuda-*/lib64"); len(m) > 0 {
		sort.Sort(sort.Reverse(sort.StringSlice(m))) // newest first
		dirs = append(dirs, m...)
	}
	dirs = append(dirs, "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/local/lib")
	// NVIDIA's Python wheels (nvidia-cuda-nvrtc-cu12, nvidia-cublas-cu12, CUDA 13's nvidia/cu13).
	home, _ := os.UserHomeDir()
	var roots []string
	for _, pat := range []string{
		"/usr/local/lib/python3*/dist-packages", "/usr/local/lib/python3*/site-packages",
		"/usr/lib/python3*/dist-packages", "/usr/lib/python3/dist-packages",
		"/opt/conda/lib/python3*/site-packages", filepath.Join(home, ".local/lib/python3*/site-packages"),
	} {
		m, _ := filepath.Glob(pat)
		roots = append(roots, m...)
	}
	for _, env := range []string{"VIRTUAL_ENV", "CONDA_PREFIX"} {
		if p := os.Getenv(env); p != "" {
			m, _ := filepath.Glob(filepath.Join(p, "lib/python3*/site-packages"))
			roots = append(roots, m...)
			dirs = append(dirs, filepath.Join(p, "lib"))
		}
	}
	for _, r := range roots {
		m, _ := filepath.Glob(filepath.Join(r, "nvidia/*/lib"))
		dirs = append(dirs, m...)
		m, _ = filepath.Glob(filepath.Join(r, "torch/lib"))
		dirs = append(dirs, m...)
	}
	return dirs
}

// openLib loads the first library that works: the plain names (resolved by
// the dynamic loader), then files matching the glob patterns in libDirs.
func openLib(what string, names []string, bases ...string) (*lib, error) {
	var tried []string
	try := func(p string) *lib {
		h, err := dlopen(p)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s (%v)", p, shortErr(err)))
			return nil
		}
		return &lib{path: p, h: h}
	}
	if !dlSupported {
		_, err := dlopen(names[0])
		return nil, err
	}
	for _, n := range names {
		if l := try(n); l != nil {
			return l, nil
		}
	}
	if len(bases) > 0 {
		seen := map[string]bool{}
		for _, d := range libDirs() {
			var m []string
			for _, base := range bases {
				g, _ := filepath.Glob(filepath.Join(d, base))
				m = append(m, g...)
			}
			sort.Sort(sort.Reverse(sort.StringSlice(m))) // higher versions first
			for _, p := range m {
				if seen[p] || strings.HasSuffix(p, ".a") || strings.Contains(filepath.Base(p), "builtins") {
					continue
				}
				seen[p] = true
				if l := try(p); l != nil {
					return l, nil
				}
			}
		}
	}
	if len(tried) > 3 {
		tried = append(tried[:3], fmt.Sprintf("%d more", len(tried)-3))
	}
	return nil, fmt.Errorf("cuda: cannot load %s; tried %s (set %s to the directory holding it)", what, strings.Join(tried, ", "), LibPathEnv)
}

func shortErr(err error) string {
	s := err.Error()
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}

// bind resolves symbols into the given function pointers.
func (l *lib) bind(syms map[string]*uintptr) error {
	for name, p := range syms {
		f, err := dlsym(l.h, name)
		if err != nil || f == 0 {
			return fmt.Errorf("cuda: %s has no symbol %s", l.path, name)
		}
		*p = f
	}
	return nil
}
