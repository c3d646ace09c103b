// Running a child process without a shell and capturing what it prints.
#pragma once

#include <string>
#include <vector>

namespace galleon::pkg {

struct ProcessResult {
  int exit_code = -1;  // exit status, or 128 + signal number when killed by a signal
  std::string out;     // everything written to stdout
  std::string err;     // everything written to stderr
};

// fork + execv(argv[0], argv); stdin is /dev/null. Error(NotFound/Io) when it cannot be started.
ProcessResult run_process(const std::vector<std::string>& argv);

}  // namespace galleon::pkg
