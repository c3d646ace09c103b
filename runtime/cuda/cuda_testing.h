// Single kernels of the CUDA backend on GPU 0, for tests/cuda_test.cpp: they let a GPU run
// compare each kernel's arithmetic with the CPU reference on random data, apart from the
// forward pass. Defined in session.cu (GALLEON_CUDA builds only; no CUDA headers here).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/ggml_type.h"

namespace galleon::cuda {

// The prompt matmul's kernels: the lanes (a warp per row and a few tokens, one lane per
// element or block), or the tiles: int8 tensor cores for the quantized types (cdev::mma::Tile)
// and shared-memory tiles for F32/F16/BF16 (cdev::plain), on compute capability 8.0 or newer
// (else the lanes). All give the canonical bits. Sessions take Tiles unless GALLEON_CUDA_GEMM=0;
// the tensor-core kernel's variant is GALLEON_CUDA_MMA's (session.cu), here as in a session.
enum class MatmulPath { Lanes, Tiles };

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
