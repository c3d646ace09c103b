#include "signing/encoding.h"

#include <openssl/evp.h>

#include <algorithm>

#include "runtime/error.h"

namespace galleon::signing {

std::string to_hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

bool is_lower_hex(std::string_view text, size_t n) {
  return text.size() == n && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

bool is_sha256_hex(std::string_view text) { return is_lower_hex(text, 64); }

std::string base64_encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

namespace {

bool is_base64_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

bool has_base64_shape(std::string_view text) {
  if (text.size() % 4 != 0) return false;
  size_t padding = 0;
  while (padding < 2 && padding < text.size() && text[text.size() - 1 - padding] == '=') ++padding;
  return std::all_of(text.begin(), text.end() - static_cast<std::ptrdiff_t>(padding), is_base64_char);
}

}  // namespace

std::string base64_decode(std::string_view text, std::string_view what) {
  auto invalid = [&] {
    return Error(ErrorKind::Invalid, std::string(what) + ": not canonical base64");
  };
  if (!has_base64_shape(text) || text.size() > (1u << 30)) throw invalid();
  std::string out(text.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0) throw invalid();
  size_t padding = text.size() - text.find_last_not_of('=') - 1;
  if (text.empty()) padding = 0;
  out.resize(static_cast<size_t>(n) - padding);
  // Canonical: re-encoding gives the same text (rejects non-zero unused bits).
  if (base64_encode(out) != text) throw invalid();
  return out;
}

}  // namespace galleon::signing
