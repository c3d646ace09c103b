// The CUDA backend's interface to the rest of the runtime (no CUDA headers; docs/cuda.md).
// In a build without -DGALLEON_CUDA=ON every entry point is the stub of runtime/cuda/stub.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/backend.h"

namespace galleon {
class Model;
}

namespace galleon::cuda {

// True when this build has the CUDA backend.
bool built();

// Number of usable GPUs; 0 with *why set (the CUDA error string, or "this build has no CUDA
// backend") when there is none or no driver. Never throws.
int device_count(std::string* why);

// A session on GPU `device`: the model's weights are uploaded once, the KV cache lives on the
// GPU. n_ctx as SessionOptions::n_ctx (0: the training context). Error(Unsupported) naming the
// CUDA error when there is no such GPU or driver; Error(Unsupported) in a build without CUDA.
std::unique_ptr<Evaluator> make_session(const Model& model, int device, int64_t n_ctx);

}  // namespace galleon::cuda
