// galleon build RECIPE [--source-dir DIR]... [--offline] [--key KEYFILE]... [--out FILE]
#include <unistd.h>

#include <iostream>
#include <memory>

#include "pkg/build.h"
#include "pkg/cli/command.h"
#include "pkg/cli/engine_exec.h"
#include "pkg/home.h"

namespace galleon::cli {
namespace {

const Registration reg{"build", [](CLI::App& root, Context&) {
  auto o = std::make_shared<pkg::BuildOptions>();
  CLI::App* cmd = root.add_subcommand("build", "Build a signed bundle from a recipe");
  cmd->add_option("RECIPE", o->recipe_path, "Recipe file (.yaml)")->required();
  cmd->add_option("--source-dir", o->source_dirs, "Folder to search for sources (repeatable)");
  cmd->add_flag("--offline", o->offline, "Never download; use local sources and the store only");
  cmd->add_option("--key", o->key_files, "Private key to sign with (repeatable)");
  cmd->add_option("--out,-o", o->out_path, "Bundle file to write (default NAME-VERSION.galleon)");
  cmd->callback([o] {
    o->engine_path = sibling_engine_path();
    o->progress = isatty(2) != 0;
    o->note = [](const std::string& line) { std::cerr << line << "\n"; };
    pkg::BuildResult r = pkg::build_bundle(*o, pkg::home_from_env());
    std::cerr << "wrote " << r.out_path << "\n";
    std::cout << r.bundle_id << "\n";
  });
}};

}  // namespace
}  // namespace galleon::cli
