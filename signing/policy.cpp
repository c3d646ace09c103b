#include "signing/policy.h"

#include <algorithm>
#include <set>

#include "runtime/error.h"
#include "signing/signature.h"

namespace galleon::signing {

const char* signature_status_name(SignatureStatus status) {
  switch (status) {
    case SignatureStatus::Trusted: return "trusted";
    case SignatureStatus::Malformed: return "malformed";
    case SignatureStatus::OtherBundle: return "other-bundle";
    case SignatureStatus::BadSignature: return "bad-signature";
    case SignatureStatus::UnknownKey: return "unknown-key";
    case SignatureStatus::RemovedKey: return "removed-key";
  }
  return "malformed";
}

namespace {

// "signatures/<keyid>.sig" -> keyid, else "".
std::string key_id_from_name(const std::string& name) {
  std::string base = name.substr(name.rfind('/') == std::string::npos ? 0 : name.rfind('/') + 1);
  if (base.size() < 4 || base.substr(base.size() - 4) != ".sig") return "";
  return base.substr(0, base.size() - 4);
}

const PublicKey* find_key(const std::vector<PublicKey>& keys, const std::string& key_id) {
  auto it = std::find_if(keys.begin(), keys.end(), [&](const PublicKey& k) { return k.key_id() == key_id; });
  return it == keys.end() ? nullptr : &*it;
}

void judge_by_key(SignatureCheck& check, const Signature& sig, const TrustStore& store,
                  const std::vector<PublicKey>& extra_keys) {
  if (auto key = store.lookup(sig.key_id)) {
    check.valid = sig.verify_with(*key);
    check.status = check.valid ? SignatureStatus::Trusted : SignatureStatus::BadSignature;
    check.reason = check.valid ? "valid signature by trusted key " + sig.key_id
                               : "signature by key " + sig.key_id + " does not verify";
    return;
  }
  if (auto key = store.lookup_removed(sig.key_id)) {
    check.valid = sig.verify_with(*key);
    check.status = check.valid ? SignatureStatus::RemovedKey : SignatureStatus::BadSignature;
    check.reason = check.valid ? "key " + sig.key_id + " was removed from the trust store"
                               : "signature by removed key " + sig.key_id + " does not verify";
    return;
  }
  const PublicKey* extra = find_key(extra_keys, sig.key_id);
  check.valid = extra && sig.verify_with(*extra);
  if (extra && !check.valid) {
    check.status = SignatureStatus::BadSignature;
    check.reason = "signature by untrusted key " + sig.key_id + " does not verify";
    return;
  }
  check.status = SignatureStatus::UnknownKey;
  check.reason = "key " + sig.key_id + " is not in the trust store" +
                 (check.valid ? " (the signature itself is valid)" : "");
}

SignatureCheck judge(const SignatureBlob& blob, const std::string& bundle_id, const TrustStore& store,
                     const std::vector<PublicKey>& extra_keys) {
  SignatureCheck check;
  check.name = blob.name;
  check.key_id = key_id_from_name(blob.name);
  Signature sig;
  try {
    sig = parse_signature(blob.bytes, blob.name);
  } catch (const Error& e) {
    check.status = SignatureStatus::Malformed;
    check.reason = e.message();
    return check;
  }
  if (!check.key_id.empty() && check.key_id != sig.key_id) {
    check.reason = blob.name + ": file name names key " + check.key_id + " but the signature is by key " + sig.key_id;
    check.key_id = sig.key_id;
    return check;
  }
  check.key_id = sig.key_id;
  if (sig.bundle_id != bundle_id) {
    check.status = SignatureStatus::OtherBundle;
    check.reason = "signature by key " + sig.key_id + " signs " + sig.bundle_id + ", expected " + bundle_id;
    return check;
  }
  judge_by_key(check, sig, store, extra_keys);
  return check;
}

}  // namespace

PolicyResult check_policy(const TrustStore& store, const std::string& bundle_id,
                          const std::vector<SignatureBlob>& signatures, unsigned threshold,
                          const std::vector<PublicKey>& extra_keys) {
  if (threshold < 1) throw Error(ErrorKind::Usage, "signature threshold must be at least 1");
  if (!is_bundle_id(bundle_id)) throw Error(ErrorKind::Usage, "'" + bundle_id + "' is not a bundle id");
  PolicyResult result;
  result.threshold = threshold;
  std::set<std::string> trusted;
  for (const SignatureBlob& blob : signatures) {
    result.checks.push_back(judge(blob, bundle_id, store, extra_keys));
    if (result.checks.back().status == SignatureStatus::Trusted) trusted.insert(result.checks.back().key_id);
  }
  result.trusted_signers.assign(trusted.begin(), trusted.end());
  result.threshold_met = result.trusted_signers.size() >= threshold;
  return result;
}

std::string PolicyResult::explain() const {
  std::string text = std::to_string(trusted_signers.size()) + " of " + std::to_string(threshold) +
                     " required trusted signatures" + (threshold_met ? "" : " (threshold not met)");
  if (checks.empty()) text += "; the bundle is not signed";
  for (const SignatureCheck& c : checks) {
    if (c.status == SignatureStatus::Trusted) continue;
    text += "\n  " + c.name + ": " + signature_status_name(c.status) + ": " + c.reason;
  }
  return text;
}

}  // namespace galleon::signing
