// The galleon CLI is a set of verbs, each in its own file, registered at start-up.
// A verb file defines `static const Registration reg{"name", setup};` where setup adds a CLI11
// subcommand to the root app and sets its callback. Callbacks throw galleon::Error on failure;
// main maps the error kind to the exit code (docs/cli.md) and prints "galleon: <message>".
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace galleon::cli {

struct Context {
  int exit_code = 0;  // a verb may set a non-zero code without throwing (e.g. verify: untrusted)
};

using Setup = std::function<void(CLI::App& root, Context& ctx)>;

struct Registration {
  Registration(std::string name, Setup setup);
};

// Registered verbs, sorted by name (so --help lists them in a stable order).
std::vector<std::pair<std::string, Setup>>& registry();

}  // namespace galleon::cli
