// Running an engine executable in place of this process.
#pragma once

#include <string>
#include <vector>

namespace galleon::cli {

// The galleon-engine beside this executable, or $GALLEON_ENGINE; with `cuda`, the
// galleon-engine-cuda beside it (a build with -DGALLEON_CUDA=ON), or $GALLEON_ENGINE_CUDA.
std::string sibling_engine_path(bool cuda = false);

// The value of the engine option --device (`--device X` or `--device=X`) in args; the last one
// given wins; "cpu" when absent.
std::string device_option(const std::vector<std::string>& args);
// True when `device` names a CUDA GPU: "cuda" or "cuda:N" (N: 1-4 decimal digits).
bool is_cuda_device(const std::string& device);
// execv(engine, [engine, args...]); throws Error when it cannot be executed.
void exec_engine(const std::string& engine, const std::vector<std::string>& args);

}  // namespace galleon::cli
