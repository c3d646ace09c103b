// galleon-engine verbs (engine ABI "galleon-engine/1": arguments in, text or JSON out).
// The galleon CLI forwards run/score/tokenize/inspect for GGUF files to this executable, and
// runs a bundle's own copy of it for installed models. docs/engine-abi.md.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <string>

#include "runtime/engine.h"

namespace galleon::engine {

inline constexpr const char* kAbi = "galleon-engine/1";

// Where the model is: a GGUF path, optionally a GGUF embedded in another file.
struct ModelArg {
  std::string path;
  uint64_t offset = 0;
  uint64_t size = 0;
  bool mmap = false;  // --mmap: map the weights from the file instead of reading them in
  void add_to(CLI::App* cmd, const char* positional_name = "MODEL");
  LoadedModel load() const;
};

struct ComputeArgs {
  int threads = 0;
  int64_t batch = 256;
  std::string device = "cpu";
  void add_to(CLI::App* cmd);
  ComputeOptions options() const;
};

// Reads --text or --file (exactly one must be given).
std::string text_or_file(const std::string& text, const std::string& file, bool text_given,
                         bool file_given, const char* text_flag);
std::vector<int32_t> tokenize(const LoadedModel& m, const std::string& text, bool no_bos,
                              bool parse_special);
// JSON to stdout (invalid UTF-8 replaced), newline-terminated.
void print_json(const nlohmann::json& j);

void add_run(CLI::App& app);
void add_score(CLI::App& app);
void add_tokenize(CLI::App& app);
void add_inspect(CLI::App& app);

}  // namespace galleon::engine
