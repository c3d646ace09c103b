// bundles: recipes (docs/recipe.md). A recipe pins every input of a bundle build by sha256 and
// size. Parsing is strict: unknown keys, missing fields, bad hashes, versions or sizes are
// Error(Invalid) with "FILE:LINE:COL: " in front.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bundles/fields.h"

namespace galleon::bundles {

inline constexpr std::string_view kRecipeFormat = "galleon-recipe/1";

struct SourcePin {
  std::string file;               // plain file name, unique within the recipe
  std::string sha256;             // 64 lowercase hex
  uint64_t size = 0;
  std::vector<std::string> urls;  // http(s), tried in order; may be empty
};

struct ModelSpec {
  enum class Format { Gguf, Llama2c };
  Format format = Format::Gguf;
  std::string file;        // Gguf: the GGUF source
  std::string checkpoint;  // Llama2c: the checkpoint source (.bin)
  std::string tokenizer;   // Llama2c: the tokenizer source (.bin)
};

struct ConformancePrompt {
  std::string prompt;
  int64_t max_tokens = 0;  // >= 1
};

struct Recipe {
  std::string name;
  std::string version;
  std::string description;
  std::string license;  // SPDX expression
  std::vector<SourcePin> sources;
  ModelSpec model;
  SamplingDefaults defaults;
  std::vector<ConformancePrompt> conformance;

  const SourcePin& source(std::string_view file) const;  // Error(NotFound) when absent
  // The parsed recipe as JSON (key "format": "galleon-recipe/1").
  nlohmann::json to_json() const;
  // Canonical JSON bytes of to_json().
  std::string canonical_json() const;
  // Hex sha256 of canonical_json(): the manifest's recipe_sha256.
  std::string digest() const;
};

// Parses YAML text; `origin` (usually the file name) starts every error message.
Recipe parse_recipe(std::string_view yaml_text, std::string_view origin);
Recipe load_recipe(const std::string& path);

}  // namespace galleon::bundles
