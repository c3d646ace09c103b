// The CUDA backend of a build configured without -DGALLEON_CUDA=ON: asking for it is an error.
#include "runtime/cuda/cuda_backend.h"
#include "runtime/error.h"

namespace galleon::cuda {
namespace {
constexpr const char* kNoCuda = "this build has no CUDA backend (configure with -DGALLEON_CUDA=ON)";
}

bool built() { return false; }

int device_count(std::string* why) {
  if (why) *why = kNoCuda;
  return 0;
}

std::unique_ptr<Evaluator> make_session(const Model&, int, int64_t) {
  fail(ErrorKind::Unsupported, kNoCuda);
}

}  // namespace galleon::cuda
