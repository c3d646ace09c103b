// signing: the trust policy. Given a bundle id and the bundle's signature files, says which
// signatures are valid, which signers are trusted, whether the threshold is met, and why each
// signature that does not count was refused.
#pragma once

#include <string>
#include <vector>

#include "signing/keys.h"
#include "signing/trust.h"

namespace galleon::signing {

enum class SignatureStatus {
  Trusted,       // valid, by a trusted key: counts toward the threshold
  Malformed,     // not a signature file, or its name does not match its key
  OtherBundle,   // signs another bundle id
  BadSignature,  // the Ed25519 signature does not verify
  UnknownKey,    // signer not in the trust store
  RemovedKey,    // signer was trusted once and has been removed
};

const char* signature_status_name(SignatureStatus status);

// One signature file as found in a bundle.
struct SignatureBlob {
  std::string name;   // e.g. "signatures/<keyid>.sig" (the key id is taken from it when present)
  std::string bytes;
};

struct SignatureCheck {
  std::string name;
  std::string key_id;       // empty when unreadable
  SignatureStatus status = SignatureStatus::Malformed;
  bool valid = false;       // the cryptographic signature verified (false when the key is unknown)
  std::string reason;       // human-readable, names the key and what was expected
};

struct PolicyResult {
  std::vector<SignatureCheck> checks;      // one per blob, in input order
  std::vector<std::string> trusted_signers;  // distinct trusted key ids with a valid signature, sorted
  unsigned threshold = 1;
  bool threshold_met = false;

  // "2 of 2 required trusted signatures" plus one line per refused signature.
  std::string explain() const;
};

// `extra_keys` (for instance public keys found beside a bundle) are used only to tell whether a
// signature by an untrusted key is valid; they never make it trusted. threshold >= 1.
PolicyResult check_policy(const TrustStore& store, const std::string& bundle_id,
                          const std::vector<SignatureBlob>& signatures, unsigned threshold = 1,
                          const std::vector<PublicKey>& extra_keys = {});

}  // namespace galleon::signing
