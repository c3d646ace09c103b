// bundles: canonical JSON (docs/bundle-format.md): UTF-8, object keys sorted bytewise, no
// insignificant whitespace, integers only, the shortest escapes. One value has exactly one
// canonical byte string, so hashing it is meaningful.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace galleon::bundles {

// Canonical bytes of `value`; Error(Invalid) when it holds a float or a string that is not UTF-8.
std::string canonical_dump(const nlohmann::json& value);

// Parses `bytes`, which must be canonical JSON (re-serializing gives the same bytes).
// Error(Invalid) naming `origin` and the first differing byte otherwise.
nlohmann::json parse_canonical(std::string_view bytes, std::string_view origin);

// True when `bytes` parse as JSON and are the canonical form of what they hold.
bool is_canonical(std::string_view bytes);

}  // namespace galleon::bundles
