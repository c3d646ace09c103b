#include <algorithm>
#include <cstdio>
#include <exception>
#include <iostream>

#include "pkg/cli/command.h"
#include "runtime/engine/run_app.h"
#include "runtime/error.h"

namespace galleon::cli {

std::vector<std::pair<std::string, Setup>>& registry() {
  static std::vector<std::pair<std::string, Setup>> r;
  return r;
}

Registration::Registration(std::string name, Setup setup) {
  registry().emplace_back(std::move(name), std::move(setup));
}

}  // namespace galleon::cli

int main(int argc, char** argv) {
  using namespace galleon;
  CLI::App app{"galleon: portable, signed, bit-reproducible language models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "galleon 0.2.0");
  cli::Context ctx;
  auto& verbs = cli::registry();
  std::sort(verbs.begin(), verbs.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [name, setup] : verbs) setup(app, ctx);
  return run_app(app, argc, argv, "galleon", ctx.exit_code);
}
