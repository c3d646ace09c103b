// signing: the trust store, a folder holding one "<keyid>.pub" per trusted key. Removed keys move
// to "removed/<keyid>.pub" so that a later policy check can say "removed key" rather than
// "unknown key". See docs/signing.md.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "signing/keys.h"

namespace galleon::signing {

class TrustStore {
 public:
  // The folder need not exist until the first add().
  explicit TrustStore(std::string dir);

  const std::string& dir() const { return dir_; }

  // Validates the public key file and trusts it (idempotent); re-adding a removed key trusts it again.
  PublicKey add_file(const std::string& public_key_path);
  PublicKey add(const PublicKey& key);
  // Trusted keys, sorted by key id. Error(Invalid) naming the file when one is damaged.
  std::vector<PublicKey> list() const;
  // Stops trusting a key (Error(NotFound) when it is not trusted).
  void remove(const std::string& key_id);
  std::optional<PublicKey> lookup(const std::string& key_id) const;
  // A key that was trusted once and then removed.
  std::optional<PublicKey> lookup_removed(const std::string& key_id) const;

 private:
  std::string trusted_path(const std::string& key_id) const;
  std::string removed_path(const std::string& key_id) const;
  std::optional<PublicKey> load_checked(const std::string& path, const std::string& key_id) const;

  std::string dir_;
};

}  // namespace galleon::signing
