// galleon build RECIPE [--source-dir DIR]... [--offline] [--key KEYFILE]... [--out FILE]
//               [--cuda-engine FILE | --cpu-only]
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
  auto cpu_only = std::make_shared<bool>(false);
  CLI::Option* cuda = cmd->add_option(
      "--cuda-engine", o->cuda_engine_path,
      "CUDA engine to bundle as a second engine (default: the galleon-engine-cuda beside "
      "galleon, when this galleon was built with -DGALLEON_CUDA=ON)");
  cmd->add_flag("--cpu-only", *cpu_only, "Bundle the CPU engine only")->excludes(cuda);
  cmd->callback([o, cpu_only] {
    o->engine_path = sibling_engine_path();
    if (o->cuda_engine_path.empty() && !*cpu_only) {
      const std::string sibling = sibling_engine_path(true);
      if (access(sibling.c_str(), X_OK) == 0) o->cuda_engine_path = sibling;
    }
    o->progress = isatty(2) != 0;
    o->note = [](const std::string& line) { std::cerr << line << "\n"; };
    pkg::BuildResult r = pkg::build_bundle(*o, pkg::home_from_env());
    std::cerr << "wrote " << r.out_path << "\n";
    std::cout << r.bundle_id << "\n";
  });
}};

}  // namespace
}  // namespace galleon::cli
