// Running an engine executable in place of this process.
#pragma once

#include <string>
#include <vector>

namespace galleon::cli {

// The galleon-engine beside this executable, or $GALLEON_ENGINE.
std::string sibling_engine_path();
// execv(engine, [engine, args...]); throws Error when it cannot be executed.
void exec_engine(const std::string& engine, const std::vector<std::string>& args);

}  // namespace galleon::cli
