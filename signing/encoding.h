// signing: hex and base64 encodings (base64 through OpenSSL, strict and canonical).
#pragma once

#include <string>
#include <string_view>

namespace galleon::signing {

// Lowercase hex of `bytes`.
std::string to_hex(std::string_view bytes);
// True for exactly 64 lowercase hex digits (a sha256 digest).
bool is_sha256_hex(std::string_view text);
// True for exactly `n` lowercase hex digits.
bool is_lower_hex(std::string_view text, size_t n);

// Standard base64 (RFC 4648, with padding, no line breaks).
std::string base64_encode(std::string_view bytes);
// Decodes canonical base64 (padding required, no whitespace, unused bits zero);
// throws Error(Invalid) naming `what` otherwise.
std::string base64_decode(std::string_view text, std::string_view what);

}  // namespace galleon::signing
