package cuda

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"
)

//go:embed kernels.cu
var kernelSource string

// nvrtc is the runtime compiler (libnvrtc).
type nvrtc struct {
	l                                                              *lib
	create, compile, destroy, logSize, getLog, cubinSize, getCubin uintptr
	ptxSize, getPTX, errString, version                            uintptr
}

func loadNVRTC() (*nvrtc, error) {
	l, err := openLib("NVRTC (libnvrtc.so)", []string{"libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"}, "libnvrtc.so*", "libnvrtc-*.so*")
	if err != nil {
		return nil, err
	}
	n := &nvrtc{l: l}
	err = l.bind(map[string]*uintptr{
		"nvrtcCreateProgram": &n.create, "nvrtcCompileProgram": &n.compile, "nvrtcDestroyProgram": &n.destroy,
		"nvrtcGetProgramLogSize": &n.logSize, "nvrtcGetProgramLog": &n.getLog, "nvrtcGetCUBINSize": &n.cubinSize,
		"nvrtcGetCUBIN": &n.getCubin, "nvrtcGetPTXSize": &n.ptxSize, "nvrtcGetPTX": &n.getPTX,
		"nvrtcGetErrorString": &n.errString, "nvrtcVersion": &n.version,
	})
	if err != nil {
		return nil, err
	}
	return n, nil
}

func (n *nvrtc) check(r uintptr, op string) error {
	if int32(r) == 0 {
		return nil
	}
	return fmt.Errorf("cuda: %s: %s (nvrtc code %d)", op, gostring(ccall(n.errString, r)), int32(r))
}

func (n *nvrtc) versionString() string {
	var maj, min int32
	ccall(n.version, uintptr(unsafe.Pointer(&maj)), uintptr(unsafe.Pointer(&min)))
	return fmt.Sprintf("%d.%d", maj, min)
}

func cstr(s string) []byte { return append([]byte(s), 0) }

// compileCubin compiles src for the real architecture sm_<arch>.
func (n *nvrtc) compileCubin(src, name string, opts []string) ([]byte, error) {
	prog, err := n.build(src, name, opts)
	if err != nil {
		return nil, err
	}
	defer ccall(n.destroy, uintptr(unsafe.Pointer(&prog)))
	var sz uintptr
	if err := n.check(ccall(n.cubinSize, prog, uintptr(unsafe.Pointer(&sz))), "nvrtcGetCUBINSize"); err != nil {
		return nil, err
	}
	if sz == 0 {
		return nil, fmt.Errorf("cuda: nvrtc produced an empty CUBIN")
	}
	out := make([]byte, sz)
	if err := n.check(ccall(n.getCubin, prog, uintptr(unsafe.Pointer(&out[0]))), "nvrtcGetCUBIN"); err != nil {
		return nil, err
	}
	return out, nil
}

// build compiles src with opts into a program, which the caller destroys
// (n.destroy); a failed compile returns the compiler's log.
func (n *nvrtc) build(src, name string, opts []string) (uintptr, error) {
	csrc, cname := cstr(src), cstr(name)
	var prog uintptr
	if err := n.check(ccall(n.create, uintptr(unsafe.Pointer(&prog)), uintptr(unsafe.Pointer(&csrc[0])), uintptr(unsafe.Pointer(&cname[0])), 0, 0, 0), "nvrtcCreateProgram"); err != nil {
		return 0, err
	}
	copts := make([][]byte, len(opts))
	ptrs := make([]uintptr, len(opts)+1)
	for i, o := range opts {
		copts[i] = cstr(o)
		ptrs[i] = uintptr(unsafe.Pointer(&copts[i][0]))
	}
	r := ccall(n.compile, prog, uintptr(len(opts)), uintptr(unsafe.Pointer(&ptrs[0])))
	keep(copts)
	if int32(r) != 0 {
		var sz uintptr
		ccall(n.logSize, prog, uintptr(unsafe.Pointer(&sz)))
		log := make([]byte, sz+1)
		ccall(n.getLog, prog, uintptr(unsafe.Pointer(&log[0])))
		ccall(n.destroy, uintptr(unsafe.Pointer(&prog)))
		return 0, fmt.Errorf("%w\ncompile log:\n%s", n.check(r, "nvrtcCompileProgram "+strings.Join(opts, " ")), strings.TrimRight(string(log[:sz]), "\x00\n"))
	}
	return prog, nil
}

//go:noinline
func keep(v any) {}

// wgmmaArch reports whether compute capability maj.min has wgmma: sm_90,
// whose kernels are then compiled for sm_90a (they run on sm_90 only).
func wgmmaArch(maj, min int) bool { return maj == 9 && min == 0 }

// kernelImage returns the compiled kernels for compute capability maj.min
// with the given preprocessor macros defined, from the on-disk cache or
// compiled with NVRTC (and then cached).
func kernelImage(cacheDir string, maj, min int, defines ...string) (image []byte, path string, err error) {
	arch := fmt.Sprintf("sm_%d%d", maj, min)
	if wgmmaArch(maj, min) {
		arch += "a" // the architecture-specific features (wgmma)
	}
	opts := []string{"--gpu-architecture=" + arch, "--std=c++17", "-default-device"}
	for _, d := range defines {
		opts = append(opts, "-D"+d)
	}
	h := sha256.Sum256([]byte(kernelSource + "\x00" + strings.Join(opts, " ")))
	if cacheDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		cacheDir = filepath.Join(base, "ringo", "cuda")
	}
	path = filepath.Join(cacheDir, fmt.Sprintf("kernels-%s-%s.cubin", arch, hex.EncodeToString(h[:8])))
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		return b, path, nil
	}
	rtc, err := loadNVRTC()
	if err != nil {
		return nil, "", err
	}
	img, err := rtc.compileCubin(kernelSource, "kernels.cu", opts)
	if err != nil {
		return nil, "", fmt.Errorf("%w (nvrtc %s at %s)", err, rtc.versionString(), rtc.l.path)
	}
	if err := os.MkdirAll(cacheDir, 0o755); err == nil {
		tmp := path + fmt.Sprintf(".%d.tmp", os.Getpid())
		if os.WriteFile(tmp, img, 0o644) == nil {
			os.Rename(tmp, path)
		}
	}
	return img, "", nil
}
