// run, score, tokenize and inspect on a GGUF file: forwarded to the galleon-engine that sits
// beside this executable (or GALLEON_ENGINE), so the CLI and a bundle's engine share one
// implementation. `run` also takes an installed NAME[@VERSION]|ID or a bundle file, which run
// with the bundle's own engine (bundle_run.h).
#include <unistd.h>

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

std::string sibling_engine_path() {
  if (const char* e = std::getenv("GALLEON_ENGINE"); e && *e) return e;
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) fail(ErrorKind::Internal, "cannot find this executable (/proc/self/exe)");
  std::string self(buf, size_t(n));
  return self.substr(0, self.rfind('/') + 1) + "galleon-engine";
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
    exec_engine(sibling_engine_path(), args);
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
