#include "pkg/conformance.h"

#include <nlohmann/json.hpp>

#include <set>

#include "bundles/canonical_json.h"
#include "pkg/process.h"
#include "runtime/error.h"
#include "signing/encoding.h"

namespace galleon::pkg {
namespace {

using nlohmann::json;

constexpr const char* kFormat = "galleon-conformance/1";

[[noreturn]] void invalid(const std::string& origin, const std::string& what) {
  fail(ErrorKind::Invalid, origin + ": " + what);
}

std::vector<int32_t> token_list(const json& v, const std::string& origin, const std::string& field) {
  if (!v.is_array()) invalid(origin, field + ": expected an array of token ids");
  std::vector<int32_t> out;
  for (const json& t : v) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX)
      invalid(origin, field + ": expected non-negative 32-bit token ids");
    out.push_back(int32_t(t.get<int64_t>()));
  }
  return out;
}

std::string hex_field(const json& obj, const std::string& key, const std::string& origin,
                      const std::string& field) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string() || !signing::is_sha256_hex(it->get<std::string>()))
    invalid(origin, field + ": expected 64 lowercase hex digits");
  return it->get<std::string>();
}

ConformanceEntry parse_entry(const json& e, const std::string& origin, const std::string& field) {
  static const std::set<std::string> kKeys{"logits_sha256", "max_tokens", "prompt", "tokens"};
  if (!e.is_object()) invalid(origin, field + ": expected an object");
  for (const auto& [k, v] : e.items())
    if (!kKeys.count(k)) invalid(origin, field + ": unknown field '" + k + "'");
  for (const auto& k : kKeys)
    if (!e.contains(k)) invalid(origin, field + ": missing field '" + k + "'");
  ConformanceEntry c;
  if (!e["prompt"].is_string() || e["prompt"].get<std::string>().empty())
    invalid(origin, field + ".prompt: expected a non-empty string");
  c.prompt = e["prompt"].get<std::string>();
  const json& n = e["max_tokens"];
  if (!n.is_number_integer() || n.get<int64_t>() < 1 || n.get<int64_t>() > INT32_MAX)
    invalid(origin, field + ".max_tokens: expected a positive integer");
  c.max_tokens = int32_t(n.get<int64_t>());
  c.tokens = token_list(e["tokens"], origin, field + ".tokens");
  c.logits_sha256 = hex_field(e, "logits_sha256", origin, field + ".logits_sha256");
  return c;
}

std::vector<std::string> engine_args(const std::string& engine, const ModelLocation& model,
                                     const std::string& prompt, int32_t max_tokens,
                                     const std::vector<std::string>& extra) {
  std::vector<std::string> a{engine, "run", model.path};
  if (model.offset != 0 || model.size != 0) {
    a.insert(a.end(), {"--model-offset", std::to_string(model.offset), "--model-size",
                       std::to_string(model.size)});
  }
  a.insert(a.end(), {"--prompt", prompt, "--temperature", "0", "--max-tokens",
                     std::to_string(max_tokens), "--json"});
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

std::string first_line(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  return line.empty() ? "(no message)" : line;
}

// Runs one prompt greedily and reads the engine's JSON answer.
ConformanceEntry run_prompt(const std::string& engine, const ModelLocation& model,
                            const std::string& prompt, int32_t max_tokens,
                            const std::vector<std::string>& extra = {}) {
  ProcessResult r = run_process(engine_args(engine, model, prompt, max_tokens, extra));
  if (r.exit_code != 0)
    invalid(engine, "the engine failed (exit " + std::to_string(r.exit_code) + ") on prompt '" +
                        prompt + "': " + first_line(r.err));
  json out = json::parse(r.out, nullptr, false);
  std::string origin = engine + ": output for prompt '" + prompt + "'";
  if (out.is_discarded() || !out.is_object()) invalid(origin, "expected one JSON object");
  ConformanceEntry c;
  c.prompt = prompt;
  c.max_tokens = max_tokens;
  if (!out.contains("tokens")) invalid(origin, "missing field 'tokens'");
  c.tokens = token_list(out["tokens"], origin, "tokens");
  c.logits_sha256 = hex_field(out, "logits_sha256", origin, "logits_sha256");
  return c;
}

std::string describe_tokens_divergence(const ConformanceEntry& want, const ConformanceEntry& got) {
  size_t n = std::min(want.tokens.size(), got.tokens.size());
  for (size_t i = 0; i < n; ++i) {
    if (want.tokens[i] != got.tokens[i])
      return "token " + std::to_string(i) + " is " + std::to_string(got.tokens[i]) +
             ", expected " + std::to_string(want.tokens[i]);
  }
  return std::to_string(got.tokens.size()) + " tokens, expected " +
         std::to_string(want.tokens.size());
}

}  // namespace

std::string Transcript::to_json() const {
  json prompts = json::array();
  for (const ConformanceEntry& e : entries) {
    prompts.push_back({{"logits_sha256", e.logits_sha256},
                       {"max_tokens", e.max_tokens},
                       {"prompt", e.prompt},
                       {"tokens", e.tokens}});
  }
  return bundles::canonical_dump({{"format", kFormat}, {"prompts", prompts}});
}

Transcript Transcript::parse(const std::string& bytes, const std::string& origin) {
  json doc = bundles::parse_canonical(bytes, origin);
  if (!doc.is_object()) invalid(origin, "expected a JSON object");
  for (const auto& [k, v] : doc.items())
    if (k != "format" && k != "prompts") invalid(origin, "unknown field '" + k + "'");
  if (!doc.contains("format") || doc["format"] != kFormat)
    invalid(origin, std::string("format: expected \"") + kFormat + "\"");
  if (!doc.contains("prompts") || !doc["prompts"].is_array() || doc["prompts"].empty())
    invalid(origin, "prompts: expected a non-empty array");
  Transcript t;
  size_t i = 0;
  for (const json& e : doc["prompts"])
    t.entries.push_back(parse_entry(e, origin, "prompts[" + std::to_string(i++) + "]"));
  return t;
}

Transcript run_conformance(const std::string& engine, const ModelLocation& model,
                           const std::vector<std::pair<std::string, int32_t>>& prompts) {
  Transcript t;
  for (const auto& [prompt, max_tokens] : prompts)
    t.entries.push_back(run_prompt(engine, model, prompt, max_tokens));
  return t;
}

ReplayResult replay(const std::string& engine, const ModelLocation& model,
                    const Transcript& expected, const std::vector<std::string>& extra_args) {
  for (size_t i = 0; i < expected.entries.size(); ++i) {
    const ConformanceEntry& want = expected.entries[i];
    ConformanceEntry got = run_prompt(engine, model, want.prompt, want.max_tokens, extra_args);
    std::string where = "prompt " + std::to_string(i) + " ('" + want.prompt + "'): ";
    if (got.tokens != want.tokens) return {false, where + describe_tokens_divergence(want, got)};
    if (got.logits_sha256 != want.logits_sha256)
      return {false, where + "logits_sha256 " + got.logits_sha256 + ", expected " +
                         want.logits_sha256};
  }
  return {true, "all " + std::to_string(expected.entries.size()) + " prompts identical"};
}

}  // namespace galleon::pkg
