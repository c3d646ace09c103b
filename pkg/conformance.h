// Conformance transcripts (bundle member conformance.json) and running an engine executable.
// Format (canonical JSON, docs/bundle-format.md):
//   {"format":"galleon-conformance/1","prompts":[{"logits_sha256":"<hex>","max_tokens":N,
//     "prompt":"...","tokens":[...]}, ...]}
// Each prompt is run greedily (--temperature 0) with --max-tokens N and --json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace galleon::pkg {

struct ConformanceEntry {
  std::string prompt;
  int32_t max_tokens = 0;
  std::vector<int32_t> tokens;
  std::string logits_sha256;
};

struct Transcript {
  std::vector<ConformanceEntry> entries;
  std::string to_json() const;  // canonical bytes
  static Transcript parse(const std::string& bytes, const std::string& origin);
};

// Where the engine finds the weights: a GGUF file, or a GGUF at [offset, offset+size) of it.
struct ModelLocation {
  std::string path;
  uint64_t offset = 0;
  uint64_t size = 0;
};

// Runs `engine run MODEL --prompt P --temperature 0 --max-tokens N --json` for each prompt
// (fork/exec, stdout captured, no shell). Error(Invalid) naming the engine when it fails or
// prints something that is not the expected JSON.
Transcript run_conformance(const std::string& engine, const ModelLocation& model,
                           const std::vector<std::pair<std::string, int32_t>>& prompts);

struct ReplayResult {
  bool identical = true;
  std::string detail;  // where it diverged: prompt index, first differing token, or the hash
};

// Re-runs every prompt of `expected` with `engine` (options `extra_args` appended, such as
// --device cuda) and compares tokens and logits_sha256.
ReplayResult replay(const std::string& engine, const ModelLocation& model,
                    const Transcript& expected, const std::vector<std::string>& extra_args = {});

}  // namespace galleon::pkg
