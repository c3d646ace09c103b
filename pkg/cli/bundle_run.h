// `galleon run` on a bundle: an installed NAME[@VERSION]|ID, or a bundle file. The bundle's own
// engine runs it, after its digest is checked, with the recipe's defaults before the user's
// arguments (docs/store.md, "Running").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace galleon::cli {

inline constexpr const char* kRunRecordFormat = "galleon-run-record/1";

// A run record (`run --record FILE`), canonical JSON:
// {"args":[..],"bundle":"sha256:..","engine_sha256":"..","format":"galleon-run-record/1",
//  "logits_sha256":"..","prompt":"..","prompt_tokens":[..],"seed":N,"tokens":[..]}
// `args` are every engine option after the model (recipe defaults included, --file replaced
// by --prompt), so a replay needs nothing else.
struct RunRecord {
  std::string bundle_id;
  std::string engine_sha256;
  std::vector<std::string> args;
  uint64_t seed = 0;
  std::string prompt;
  std::vector<int32_t> prompt_tokens;
  std::vector<int32_t> tokens;
  std::string logits_sha256;

  std::string to_json() const;
  static RunRecord parse(const std::string& bytes, const std::string& origin);
};

struct ReplayOutcome {
  bool identical = false;
  std::string detail;  // the first token where it diverged
};

// Re-runs a record with the installed bundle it names (Error(NotFound) when not installed).
ReplayOutcome replay_record(const RunRecord& record);

// When args[0] names an installed bundle or is a bundle file, execs that bundle's engine (does
// not return; throws Error on failure); with "--record FILE" it runs the engine as a child,
// prints its output and writes the run record, then returns true. Returns false when args[0] is something else (a GGUF
// file), which the caller forwards to the sibling engine.
bool run_bundle_if_named(const std::vector<std::string>& args);

// The recipe defaults the user did not give, as engine options ("--temperature", "0.8", ...).
std::vector<std::string> default_args(const std::string& manifest_bytes,
                                      const std::vector<std::string>& user_args);

}  // namespace galleon::cli
