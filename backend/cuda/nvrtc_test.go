package cuda

import (
	"os"
	"testing"
	"unsafe"
)

// TestKernelsCompileOffline compiles kernels.cu with the NVRTC found on
// this machine for the virtual architecture in RINGO_CUDA_COMPILE_CHECK
// (such as compute_90), which needs no GPU: the kernels' C++ errors show up
// before a GPU run. It is skipped without that variable. An older NVRTC
// (Debian's libnvrtc11.2 is 11.8) checks the C++; only a GPU run's ptxas
// checks the inline PTX of newer instructions.
func TestKernelsCompileOffline(t *testing.T) {
	arch := os.Getenv("RINGO_CUDA_COMPILE_CHECK")
	if arch == "" {
		t.Skip("RINGO_CUDA_COMPILE_CHECK not set (a virtual architecture such as compute_90)")
	}
	n, err := loadNVRTC()
	if err != nil {
		t.Fatal(err)
	}
	// as the backend compiles it, and with the timeline's probes
	// (RINGO_CUDA_TIMELINE)
	for _, defines := range [][]string{nil, {"-DRINGO_TIMELINE"}} {
		prog, err := n.build(kernelSource, "kernels.cu", append([]string{"--gpu-architecture=" + arch, "--std=c++17", "-default-device"}, defines...))
		if err != nil {
			t.Fatalf("nvrtc %s %v: %v", n.versionString(), defines, err)
		}
		ccall(n.destroy, uintptr(unsafe.Pointer(&prog)))
		t.Logf("kernels.cu compiles with nvrtc %s for %s %v", n.versionString(), arch, defines)
	}
}
