#include "bundles/fields.h"

#include <algorithm>

namespace galleon::bundles {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool all_digits(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), is_digit); }

bool is_number_part(std::string_view s) { return all_digits(s) && (s.size() == 1 || s[0] != '0'); }

}  // namespace

bool is_valid_name(std::string_view name) {
  auto ok = [](char c) { return (c >= 'a' && c <= 'z') || is_digit(c) || c == '.' || c == '_' || c == '-'; };
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), ok) &&
         (is_digit(name[0]) || (name[0] >= 'a' && name[0] <= 'z'));
}

bool is_valid_version(std::string_view version) {
  if (version.empty() || version.size() > 64) return false;
  size_t dash = version.find('-');
  std::string_view core = version.substr(0, dash);
  if (dash != std::string_view::npos) {
    std::string_view suffix = version.substr(dash + 1);
    auto ok = [](char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.'; };
    if (suffix.empty() || !std::all_of(suffix.begin(), suffix.end(), ok)) return false;
  }
  size_t start = 0;
  for (;;) {
    size_t dot = core.find('.', start);
    if (!is_number_part(core.substr(start, dot - start))) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

bool is_canonical_decimal(std::string_view text) {
  return !text.empty() && normalize_decimal(text) == text;
}

std::string normalize_decimal(std::string_view text) {
  size_t dot = text.find('.');
  std::string_view whole = text.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? std::string_view() : text.substr(dot + 1);
  if (!all_digits(whole) || (!frac.empty() && !all_digits(frac))) return "";
  whole.remove_prefix(std::min(whole.find_first_not_of('0'), whole.size() - 1));
  size_t last = frac.find_last_not_of('0');
  frac = last == std::string_view::npos ? std::string_view() : frac.substr(0, last + 1);
  std::string out(whole);
  if (!frac.empty()) {
    out += '.';
    out += frac;
  }
  return out;
}

bool is_single_line(std::string_view text, size_t max_len) {
  return !text.empty() && text.size() <= max_len && std::none_of(text.begin(), text.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

std::string SamplingDefaults::problem() const {
  if (!is_canonical_decimal(temperature)) return "temperature: expected a canonical decimal such as \"0.8\"";
  if (!is_canonical_decimal(top_p)) return "top_p: expected a canonical decimal such as \"0.9\"";
  if (top_p == "0" || !(top_p == "1" || top_p.substr(0, 2) == "0."))
    return "top_p: expected a decimal in (0, 1]";
  if (top_k < 0) return "top_k: expected an integer >= 0";
  if (max_tokens < 1) return "max_tokens: expected an integer >= 1";
  return "";
}

nlohmann::json SamplingDefaults::to_json() const {
  return nlohmann::json{{"max_tokens", max_tokens},
                        {"seed", seed},
                        {"temperature", temperature},
                        {"top_k", top_k},
                        {"top_p", top_p}};
}

}  // namespace galleon::bundles
