package cuda

import (
	"fmt"
	"unsafe"
)

// driver is the CUDA driver API (libcuda).
type driver struct {
	l *lib

	cuInit, cuDriverGetVersion, cuDeviceGetCount, cuDeviceGet, cuDeviceGetName, cuDeviceGetAttribute, cuDeviceTotalMem uintptr
	cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRelease, cuCtxSetCurrent, cuCtxSynchronize                             uintptr
	cuMemAlloc, cuMemFree, cuMemAllocHost, cuMemFreeHost, cuMemGetInfo                                                 uintptr
	cuMemcpyHtoD, cuMemcpyDtoH, cuMemcpyHtoDAsync, cuMemcpyDtoDAsync, cuMemsetD32Async                                 uintptr
	cuModuleLoadData, cuModuleUnload, cuModuleGetFunction, cuFuncSetAttribute, cuFuncGetAttribute, cuLaunchKernel      uintptr
	cuGetErrorString, cuGetErrorName                                                                                   uintptr
	cuStreamCreate, cuStreamDestroy, cuMemcpyDtoHAsync                                                                 uintptr
	cuEventCreate, cuEventRecord, cuEventElapsedTime                                                                   uintptr

	// CUDA graphs (optional: nil when the driver lacks them, which turns graphs off)
	cuStreamBeginCapture, cuStreamEndCapture, cuGraphInstantiate, cuGraphLaunch, cuGraphExecDestroy, cuGraphDestroy uintptr

	// launches with attributes (optional: CUDA 12+), for programmatic dependent launch
	cuLaunchKernelEx uintptr

	cuModuleGetGlobal uintptr // (optional) for RINGO_CUDA_TIMELINE

	// (optional) for reads straight into Go memory (Backend.readDirect)
	cuMemHostRegister, cuMemHostUnregister uintptr

	// (optional) for kernels whose blocks must all be resident at once
	cuOccupancyMaxActiveBlocksPerMultiprocessor uintptr
	// (optional) how many clusters of a kernel fit on the GPU at once
	cuOccupancyMaxActiveClusters uintptr
}

// launchConfig is CUlaunchConfig; launchAttr is CUlaunchAttribute (an id and a
// 64-byte value union, 8-byte aligned).
type launchConfig struct {
	gridX, gridY, gridZ    uint32
	blockX, blockY, blockZ uint32
	smem                   uint32
	_                      uint32
	stream                 uintptr
	attrs                  *launchAttr
	nattrs                 uint32
	_                      uint32
}

type launchAttr struct {
	id  uint32
	_   uint32
	val [64]byte
}

// cuLaunchAttrProgrammaticStreamSerialization is
// CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION; its value is an int
// (non-zero: the kernel may overlap the previous one in the stream, which it
// then waits for with griddepcontrol.wait).
const cuLaunchAttrProgrammaticStreamSerialization = 6

// CUDA driver constants used here.
const (
	cuDevAttrMultiprocessorCount  = 16
	cuDevAttrCCMajor              = 75
	cuDevAttrCCMinor              = 76
	cuDevAttrMaxSharedPerBlockOpt = 97
	cuFuncAttrSharedSizeBytes     = 1
	cuFuncAttrLocalSizeBytes      = 3
	cuFuncAttrNumRegs             = 4
	cuFuncAttrMaxDynamicShared    = 8
	cuFuncAttrNonPortableCluster  = 14 // CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED
	cuErrorNoDevice               = 100
)

func loadDriver() (*driver, error) {
	l, err := openLib("the CUDA driver (libcuda.so.1; is the NVIDIA driver installed?)",
		[]string{"libcuda.so.1", "libcuda.so", "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1", "/usr/local/nvidia/lib64/libcuda.so.1", "/usr/lib/wsl/lib/libcuda.so.1"})
	if err != nil {
		return nil, err
	}
	d := &driver{l: l}
	err = l.bind(map[string]*uintptr{
		"cuInit": &d.cuInit, "cuDriverGetVersion": &d.cuDriverGetVersion, "cuDeviceGetCount": &d.cuDeviceGetCount,
		"cuDeviceGet": &d.cuDeviceGet, "cuDeviceGetName": &d.cuDeviceGetName, "cuDeviceGetAttribute": &d.cuDeviceGetAttribute,
		"cuDeviceTotalMem_v2": &d.cuDeviceTotalMem, "cuDevicePrimaryCtxRetain": &d.cuDevicePrimaryCtxRetain,
		"cuDevicePrimaryCtxRelease_v2": &d.cuDevicePrimaryCtxRelease, "cuCtxSetCurrent": &d.cuCtxSetCurrent,
		"cuCtxSynchronize": &d.cuCtxSynchronize, "cuMemAlloc_v2": &d.cuMemAlloc, "cuMemFree_v2": &d.cuMemFree,
		"cuMemAllocHost_v2": &d.cuMemAllocHost, "cuMemFreeHost": &d.cuMemFreeHost, "cuMemGetInfo_v2": &d.cuMemGetInfo,
		"cuMemcpyHtoD_v2": &d.cuMemcpyHtoD, "cuMemcpyDtoH_v2": &d.cuMemcpyDtoH, "cuMemcpyHtoDAsync_v2": &d.cuMemcpyHtoDAsync,
		"cuMemcpyDtoDAsync_v2": &d.cuMemcpyDtoDAsync, "cuMemsetD32Async": &d.cuMemsetD32Async,
		"cuModuleLoadData": &d.cuModuleLoadData, "cuModuleUnload": &d.cuModuleUnload, "cuModuleGetFunction": &d.cuModuleGetFunction,
		"cuFuncSetAttribute": &d.cuFuncSetAttribute, "cuFuncGetAttribute": &d.cuFuncGetAttribute, "cuLaunchKernel": &d.cuLaunchKernel,
		"cuGetErrorString": &d.cuGetErrorString, "cuGetErrorName": &d.cuGetErrorName,
		"cuStreamCreate": &d.cuStreamCreate, "cuStreamDestroy_v2": &d.cuStreamDestroy, "cuMemcpyDtoHAsync_v2": &d.cuMemcpyDtoHAsync,
		"cuEventCreate": &d.cuEventCreate, "cuEventRecord": &d.cuEventRecord, "cuEventElapsedTime": &d.cuEventElapsedTime,
	})
	if err != nil {
		return nil, err
	}
	var g driver
	if l.bind(map[string]*uintptr{
		"cuStreamBeginCapture_v2": &g.cuStreamBeginCapture, "cuStreamEndCapture": &g.cuStreamEndCapture,
		"cuGraphInstantiateWithFlags": &g.cuGraphInstantiate, "cuGraphLaunch": &g.cuGraphLaunch,
		"cuGraphExecDestroy": &g.cuGraphExecDestroy, "cuGraphDestroy": &g.cuGraphDestroy,
	}) == nil {
		d.cuStreamBeginCapture, d.cuStreamEndCapture, d.cuGraphInstantiate = g.cuStreamBeginCapture, g.cuStreamEndCapture, g.cuGraphInstantiate
		d.cuGraphLaunch, d.cuGraphExecDestroy, d.cuGraphDestroy = g.cuGraphLaunch, g.cuGraphExecDestroy, g.cuGraphDestroy
	}
	var ex, gg uintptr
	if l.bind(map[string]*uintptr{"cuLaunchKernelEx": &ex}) == nil {
		d.cuLaunchKernelEx = ex
	}
	if l.bind(map[string]*uintptr{"cuModuleGetGlobal_v2": &gg}) == nil {
		d.cuModuleGetGlobal = gg
	}
	var hr, hu uintptr
	if l.bind(map[string]*uintptr{"cuMemHostRegister_v2": &hr, "cuMemHostUnregister": &hu}) == nil {
		d.cuMemHostRegister, d.cuMemHostUnregister = hr, hu
	}
	var occ uintptr
	if l.bind(map[string]*uintptr{"cuOccupancyMaxActiveBlocksPerMultiprocessor": &occ}) == nil {
		d.cuOccupancyMaxActiveBlocksPerMultiprocessor = occ
	}
	var occc uintptr
	if l.bind(map[string]*uintptr{"cuOccupancyMaxActiveClusters": &occc}) == nil {
		d.cuOccupancyMaxActiveClusters = occc
	}
	return d, nil
}

// cuError is a failed driver call.
type cuError struct {
	op   string
	code int
	name string
	msg  string
}

func (e *cuError) Error() string {
	return fmt.Sprintf("cuda: %s: %s (%s, code %d)", e.op, e.msg, e.name, e.code)
}

// check turns a CUresult into an error naming the operation.
func (d *driver) check(r uintptr, op string) error {
	if int32(r) == 0 {
		return nil
	}
	var name, msg uintptr
	ccall(d.cuGetErrorName, r, uintptr(unsafe.Pointer(&name)))
	ccall(d.cuGetErrorString, r, uintptr(unsafe.Pointer(&msg)))
	e := &cuError{op: op, code: int(int32(r)), name: gostring(name), msg: gostring(msg)}
	if e.name == "" {
		e.name = "CUDA_ERROR"
	}
	if e.msg == "" {
		e.msg = "unknown error"
	}
	return e
}

func (d *driver) attr(dev int32, a int) (int, error) {
	var v int32
	if err := d.check(ccall(d.cuDeviceGetAttribute, uintptr(unsafe.Pointer(&v)), uintptr(a), uintptr(dev)), "cuDeviceGetAttribute"); err != nil {
		return 0, err
	}
	return int(v), nil
}
