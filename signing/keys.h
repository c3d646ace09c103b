// signing: Ed25519 keys (OpenSSL). Private keys are PKCS#8 PEM files of mode 0600; public keys are
// one line "galleon-ed25519 <base64 of the 32 raw bytes> <comment>". See docs/signing.md.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <string_view>

namespace galleon::signing {

inline constexpr std::string_view kPublicKeyPrefix = "galleon-ed25519";

using RawPublicKey = std::array<unsigned char, 32>;
using RawSignature = std::array<unsigned char, 64>;

struct PublicKey {
  RawPublicKey raw{};
  std::string comment;  // free text, no control characters; may be empty

  // First 16 lowercase hex digits of sha256(raw).
  std::string key_id() const;
  // "galleon-ed25519 <base64> <comment>\n" (no trailing space when the comment is empty).
  std::string to_line() const;
  // True when the signature over `message` verifies with this key.
  bool verify(std::string_view message, const RawSignature& signature) const;
};

// Parses the public key file format; Error(Invalid) naming `origin` when malformed.
PublicKey parse_public_key(std::string_view text, std::string_view origin);
PublicKey load_public_key(const std::string& path);
// Writes the one-line public key file (refuses to overwrite).
void save_public_key(const std::string& path, const PublicKey& key);

// True for a well-formed key id (16 lowercase hex digits).
bool is_key_id(std::string_view text);

class PrivateKey {
 public:
  static PrivateKey generate();
  // Parses PKCS#8 PEM text; Error(Invalid) when it is not an Ed25519 private key.
  static PrivateKey from_pem(std::string_view pem, std::string_view origin);
  // Loads a key file; refuses files readable or writable by group/others (Error(Untrusted)).
  static PrivateKey load(const std::string& path);

  ~PrivateKey();
  PrivateKey(PrivateKey&&) noexcept;
  PrivateKey& operator=(PrivateKey&&) noexcept;

  std::string to_pem() const;
  // Creates `path` with O_EXCL and mode 0600 (refuses to overwrite).
  void save(const std::string& path) const;

  PublicKey public_key(std::string comment = "") const;
  std::string key_id() const { return public_key().key_id(); }
  RawSignature sign(std::string_view message) const;

 private:
  struct Impl;
  explicit PrivateKey(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct KeyFiles {
  std::string private_path;  // DIR/NAME.key
  std::string public_path;   // DIR/NAME.pub
  PublicKey public_key;
};

// Generates a key pair and writes DIR/NAME.key (0600) and DIR/NAME.pub; the comment is NAME.
KeyFiles generate_key_files(const std::string& dir, const std::string& name);

}  // namespace galleon::signing
