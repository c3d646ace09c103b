// Hidden verb for the hardening tests (docs/hardening.md): `galleon debug crash-points` prints
// every crash point name, one a line, so that tests/crash_test.cpp tries all of them.
#include <iostream>

#include "pkg/cli/command.h"
#include "pkg/crash_point.h"

namespace galleon::cli {
namespace {

void setup_debug(CLI::App& root, Context&) {
  CLI::App* cmd = root.add_subcommand("debug", "Test helpers");
  cmd->group("");  // hidden from --help
  cmd->require_subcommand(1);
  CLI::App* points = cmd->add_subcommand("crash-points", "List the crash point names");
  points->callback([] {
    for (const auto& p : pkg::crash_points()) std::cout << p << "\n";
  });
}

const Registration reg_debug{"debug", setup_debug};

}  // namespace
}  // namespace galleon::cli
