// bundles: the paths a bundle may hold (docs/bundle-format.md, "Member paths").
#pragma once

#include <string>
#include <string_view>

namespace galleon::bundles {

inline constexpr std::string_view kManifestName = "MANIFEST.json";
inline constexpr std::string_view kSignaturesDir = "signatures/";
inline constexpr size_t kMaxPathLength = 100;  // fits a ustar name field: no extended header

// Relative, '/'-separated, 1..100 bytes, components of [A-Za-z0-9._+-] that are not "." or "..".
bool is_safe_path(std::string_view path);
// A member path: safe, and neither MANIFEST.json nor under signatures/.
bool is_member_path(std::string_view path);
// "signatures/<16 lowercase hex>.sig".
bool is_signature_path(std::string_view path);
// The path quoted for a message, with bytes outside printable ASCII written as \xNN.
std::string quote_path(std::string_view path);

}  // namespace galleon::bundles
