// runtime/cuda/session.cu compiled for the CPU against the host CUDA runtime
// (tests/cuda_host/cuda_runtime.h, found first on the include path): the CUDA backend's own
// kernels and host code, run by tests/cuda_test.cpp as cuda_host_test.
#include "runtime/cuda/session.cu"
