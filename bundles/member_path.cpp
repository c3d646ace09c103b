#include "bundles/member_path.h"

#include <algorithm>
#include <cstdio>

#include "signing/encoding.h"

namespace galleon::bundles {

namespace {

bool is_path_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == '+';
}

bool is_safe_component(std::string_view part) {
  return !part.empty() && part != "." && part != ".." && std::all_of(part.begin(), part.end(), is_path_char);
}

}  // namespace

bool is_safe_path(std::string_view path) {
  if (path.empty() || path.size() > kMaxPathLength) return false;
  size_t start = 0;
  for (;;) {
    size_t slash = path.find('/', start);
    if (!is_safe_component(path.substr(start, slash - start))) return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

bool is_member_path(std::string_view path) {
  return is_safe_path(path) && path != kManifestName && path.substr(0, kSignaturesDir.size()) != kSignaturesDir;
}

bool is_signature_path(std::string_view path) {
  constexpr std::string_view suffix = ".sig";
  if (path.size() != kSignaturesDir.size() + 16 + suffix.size()) return false;
  return path.substr(0, kSignaturesDir.size()) == kSignaturesDir &&
         signing::is_lower_hex(path.substr(kSignaturesDir.size(), 16), 16) &&
         path.substr(path.size() - suffix.size()) == suffix;
}

std::string quote_path(std::string_view path) {
  std::string out = "'";
  for (char c : path) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '\\' && c != '\'') {
      out.push_back(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    }
  }
  return out + "'";
}

}  // namespace galleon::bundles
