// signing: bundle signatures. A signature signs the bundle id through the domain-separated message
// "galleon-bundle-signature/1\n<bundle id>" and is stored as canonical JSON (docs/signing.md):
// {"algorithm":"ed25519","bundle":"sha256:...","format":"galleon-signature/1","key":"<keyid>",
//  "signature":"<base64 of 64 bytes>"}
#pragma once

#include <string>
#include <string_view>

#include "signing/keys.h"

namespace galleon::signing {

inline constexpr std::string_view kSignatureFormat = "galleon-signature/1";
inline constexpr std::string_view kSignatureDomain = "galleon-bundle-signature/1\n";
inline constexpr size_t kMaxSignatureFile = 64 * 1024;

// True for "sha256:" followed by 64 lowercase hex digits.
bool is_bundle_id(std::string_view text);
// The exact bytes signed for a bundle id.
std::string signature_message(std::string_view bundle_id);

struct Signature {
  std::string bundle_id;  // "sha256:<hex>"
  std::string key_id;     // 16 hex digits
  RawSignature signature{};

  // Canonical JSON bytes (no trailing newline).
  std::string to_json() const;
  // The file name inside a bundle: "signatures/<keyid>.sig".
  std::string member_name() const { return "signatures/" + key_id + ".sig"; }
  // True when the signature verifies with `key` for this->bundle_id (key ids must match too).
  bool verify_with(const PublicKey& key) const;
};

// Parses a signature file; it must be canonical JSON with exactly the five fields.
// Error(Invalid) naming `origin` and the field otherwise.
Signature parse_signature(std::string_view bytes, std::string_view origin);

// Signs `bundle_id` (Error(Usage) when it is not a bundle id).
Signature sign_bundle_id(const PrivateKey& key, std::string_view bundle_id);

}  // namespace galleon::signing
