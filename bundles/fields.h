// bundles: field rules shared by recipes and manifests (names, versions, decimals, licenses) and
// the sampling defaults both carry. See docs/recipe.md and docs/bundle-format.md.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace galleon::bundles {

// 1..64 bytes of [a-z0-9._-], starting with a letter or digit.
bool is_valid_name(std::string_view name);
// Semver-like: digits and dots ("1", "1.2", "1.2.3", no empty parts, no leading zeros), then an
// optional "-suffix" of [A-Za-z0-9.]; at most 64 bytes.
bool is_valid_version(std::string_view version);
// A canonical non-negative decimal: "0", "12", "0.8", "1.25" (no leading zeros, no trailing
// fraction zeros, no sign, no exponent).
bool is_canonical_decimal(std::string_view text);
// Rewrites a plain decimal ("0.80", "00.5", "1.", "2.0") into canonical form; "" when `text` is
// not a plain non-negative decimal.
std::string normalize_decimal(std::string_view text);
// Printable single-line text (UTF-8 allowed, no control characters), 1..max_len bytes.
bool is_single_line(std::string_view text, size_t max_len);

// Sampling defaults. Decimals are kept as canonical decimal strings (never floats).
struct SamplingDefaults {
  std::string temperature = "0.8";  // >= 0
  std::string top_p = "0.9";        // 0 < top_p <= 1
  int64_t top_k = 40;               // >= 0 (0: off)
  uint64_t seed = 0;
  int64_t max_tokens = 256;         // >= 1

  // Empty when valid, else "field: what was expected".
  std::string problem() const;
  nlohmann::json to_json() const;
  bool operator==(const SamplingDefaults&) const = default;
};

}  // namespace galleon::bundles
