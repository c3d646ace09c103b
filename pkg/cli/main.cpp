#include <algorithm>
#include <cstdio>
#include <exception>
#include <iostream>

#include "pkg/cli/command.h"
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
  app.set_version_flag("--version", "galleon 0.1.0");
  cli::Context ctx;
  auto& verbs = cli::registry();
  std::sort(verbs.begin(), verbs.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [name, setup] : verbs) setup(app, ctx);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : exit_code(ErrorKind::Usage);
  } catch (const Error& e) {
    std::fflush(stdout);
    std::cerr << "galleon: " << e.message() << "\n";
    return exit_code(e.kind());
  } catch (const std::bad_alloc&) {
    std::cerr << "galleon: out of memory\n";
    return exit_code(ErrorKind::Io);
  } catch (const std::exception& e) {
    std::cerr << "galleon: internal error: " << e.what() << "\n";
    return exit_code(ErrorKind::Internal);
  }
  return ctx.exit_code;
}
