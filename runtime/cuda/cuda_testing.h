// Single kernels of the CUDA backend on GPU 0, for tests/cuda_test.cpp: they let a GPU run
// compare each kernel's arithmetic with the CPU reference on random data, apart from the
// forward pass. Defined in session.cu (GALLEON_CUDA builds only; no CUDA headers here).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/ggml_type.h"

namespace galleon::cuda {

// The prompt matmul's kernels for the quantized types: one lane per block (dp4a), or int8
// tensor cores (cdev::mma::Tile; compute capability 8.0 or newer, else the lanes). Both give
// the canonical bits. Sessions take TensorCores when GALLEON_CUDA_MMA=1.
enum class MatmulPath { Lanes, TensorCores };

}  // namespace galleon::cuda

namespace galleon::cuda::testing {

// y[t * rows + r] = the matmul kernel's dot of weight row r (rows of w, w.size() / rows bytes
// each) with activation row t (act.size() / ntok bytes each, kern::act_format(type)).
std::vector<float> matmul(GgmlType type, int64_t n, int64_t rows, const std::vector<uint8_t>& w,
                          const std::vector<uint8_t>& act, int64_t ntok,
                          MatmulPath path = MatmulPath::Lanes);
// The activation quantization kernel: ntok rows of n floats -> act_row_bytes(type, n) each.
std::vector<uint8_t> quantize(GgmlType type, const std::vector<float>& x, int64_t n, int64_t ntok);
// cdev::expf (op 0) or silu(x) * 1 (op 1, the FFN kernel with up = 1) of every element.
std::vector<float> map(int op, const std::vector<float>& x);

}  // namespace galleon::cuda::testing
