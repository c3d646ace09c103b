#include "pkg/verify.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "bundles/reader.h"
#include "signing/keys.h"
#include "signing/trust.h"

namespace galleon::pkg {
namespace {

namespace fs = std::filesystem;
using signing::SignatureStatus;

// Well-formed public key files in the bundle's folder.
std::vector<signing::PublicKey> keys_beside(const std::string& bundle_path) {
  std::vector<signing::PublicKey> keys;
  fs::path dir = fs::path(bundle_path).parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  std::vector<std::string> files;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().extension() == ".pub") files.push_back(it->path().string());
  std::sort(files.begin(), files.end());
  for (const std::string& f : files) {
    try {
      keys.push_back(signing::load_public_key(f));
    } catch (const Error&) {
      // not a galleon public key: ignored
    }
  }
  return keys;
}

bool is_broken(const signing::SignatureCheck& c) {
  return c.status == SignatureStatus::Malformed || c.status == SignatureStatus::OtherBundle ||
         c.status == SignatureStatus::BadSignature;
}

void judge_signatures(VerifyReport& r, const bundles::BundleReader& reader, const Home& home,
                      int threshold) {
  std::vector<signing::PublicKey> beside = keys_beside(r.path);
  for (const auto& k : beside) r.beside_keys.push_back(k.key_id());
  signing::TrustStore store(home.trust());
  r.policy = signing::check_policy(store, r.id, reader.signatures(), threshold, beside);
  std::set<std::string> ids;
  for (const auto& c : r.policy.checks) {
    if (!c.key_id.empty()) ids.insert(c.key_id);
    if (is_broken(c) && r.valid) {
      r.valid = false;
      r.problem_kind = ErrorKind::Invalid;
      r.problem = r.path + ": " + c.name + ": " + c.reason;
    }
  }
  r.signers.assign(ids.begin(), ids.end());
  r.trusted = r.valid && r.policy.threshold_met;
  if (r.valid && !r.trusted) {
    r.problem_kind = ErrorKind::Untrusted;
    r.problem = r.path + ": not trusted: " + r.policy.explain();
  }
}

}  // namespace

ErrorKind VerifyReport::outcome() const {
  if (valid && trusted) return ErrorKind::Internal;  // unused: success
  return problem_kind;
}

nlohmann::json VerifyReport::to_json() const {
  nlohmann::json sigs = nlohmann::json::array();
  for (const auto& c : policy.checks) {
    sigs.push_back({{"file", c.name}, {"key", c.key_id},
                    {"status", signing::signature_status_name(c.status)}, {"valid", c.valid},
                    {"reason", c.reason}});
  }
  nlohmann::json j = {{"path", path}, {"id", id}, {"name", name}, {"version", version},
                      {"members", members}, {"valid", valid}, {"trusted", trusted},
                      {"signers", signers}, {"trusted_signers", policy.trusted_signers},
                      {"keys_beside", beside_keys}, {"signatures", sigs}};
  if (!problem.empty()) j["problem"] = problem;
  return j;
}

VerifyReport verify_bundle(const std::string& path, const Home& home, int threshold) {
  VerifyReport r;
  r.path = path;
  std::unique_ptr<bundles::BundleReader> reader;
  try {
    reader = std::make_unique<bundles::BundleReader>(path);
    r.id = reader->id();
    r.name = reader->manifest().name;
    r.version = reader->manifest().version;
    r.members = reader->manifest().members.size();
    reader->verify();
    r.valid = true;
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::NotFound || (e.kind() == ErrorKind::Io && !reader)) throw;
    r.problem_kind = e.kind();
    r.problem = e.message();
  }
  if (reader) judge_signatures(r, *reader, home, threshold);
  return r;
}

}  // namespace galleon::pkg
