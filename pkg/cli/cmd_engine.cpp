// run, score, tokenize and inspect on a GGUF file: forwarded to the galleon-engine that sits
// beside this executable (or GALLEON_ENGINE), so the CLI and a bundle's engine share one
// implementation. `run` also takes an installed NAME[@VERSION]|ID or a bundle file, which run
// with the bundle's own engine (bundle_run.h).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "pkg/cli/command.h"
#include "pkg/cli/bundle_run.h"
#include "pkg/cli/engine_exec.h"
#include "runtime/error.h"

namespace galleon::cli {

std::string sibling_engine_path(bool cuda) {
  if (const char* e = std::getenv(cuda ? "GALLEON_ENGINE_CUDA" : "GALLEON_ENGINE"); e && *e)
    return e;
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) fail(ErrorKind::Internal, "cannot find this executable (/proc/self/exe)");
  std::string self(buf, size_t(n));
  return self.substr(0, self.rfind('/') + 1) + (cuda ? "galleon-engine-cuda" : "galleon-engine");
}

std::string device_option(const std::vector<std::string>& args) {
  std::string device = "cpu";
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--device" && i + 1 < args.size())
      device = args[++i];
    else if (args[i].rfind("--device=", 0) == 0)
      device = args[i].substr(9);
  }
  return device;
}

bool is_cuda_device(const std::string& device) {
  if (device == "cuda") return true;
  if (device.rfind("cuda:", 0) != 0 || device.size() == 5 || device.size() > 9) return false;
  return std::all_of(device.begin() + 5, device.end(), [](char c) { return c >= '0' && c <= '9'; });
}

void exec_engine(const std::string& engine, const std::vector<std::string>& args) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(engine.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  execv(engine.c_str(), argv.data());
  fail(errno == ENOENT ? ErrorKind::NotFound : ErrorKind::Io,
       engine + ": cannot run the engine: " + std::strerror(errno));
}

namespace {

// The sibling engine for these arguments: galleon-engine-cuda for --device cuda[:N].
std::string engine_for(const std::vector<std::string>& args) {
  if (!is_cuda_device(device_option(args))) return sibling_engine_path();
  std::string engine = sibling_engine_path(true);
  if (access(engine.c_str(), X_OK) != 0)
    fail(ErrorKind::Unsupported, "this galleon has no CUDA backend: " + engine +
                                     " is missing (configure with -DGALLEON_CUDA=ON)");
  return engine;
}

void forward(CLI::App& root, const char* verb, const char* help) {
  CLI::App* cmd = root.add_subcommand(verb, help);
  cmd->prefix_command();
  cmd->set_help_flag();  // --help is answered by the engine
  cmd->allow_extras();
  cmd->callback([cmd, verb] {
    std::vector<std::string> rest = cmd->remaining();
    if (std::string(verb) == "run" && run_bundle_if_named(rest)) return;
    std::vector<std::string> args{verb};
    for (const auto& a : rest) args.push_back(a);
    exec_engine(engine_for(rest), args);
  });
}

const Registration reg_run{"run", [](CLI::App& root, Context&) {
                             forward(root, "run",
                                     "Generate text with a GGUF model, an installed bundle "
                                     "(NAME[@VERSION]|ID) or a bundle file");
                           }};
const Registration reg_score{"score", [](CLI::App& root, Context&) {
                               forward(root, "score", "Log-likelihood and perplexity of a text");
                             }};
const Registration reg_tokenize{"tokenize", [](CLI::App& root, Context&) {
                                  forward(root, "tokenize", "Token ids of a text");
                                }};
const Registration reg_inspect{"inspect", [](CLI::App& root, Context&) {
                                 forward(root, "inspect", "Metadata and tensors of a GGUF file");
                               }};

}  // namespace
}  // namespace galleon::cli
