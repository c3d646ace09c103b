// galleon verify: a bundle's structure, members, signatures and trust (docs/cli.md).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "pkg/home.h"
#include "runtime/error.h"
#include "signing/policy.h"

namespace galleon::pkg {

struct VerifyReport {
  std::string path;
  std::string id;  // empty when the head could not be read
  std::string name;
  std::string version;
  size_t members = 0;
  bool valid = false;    // structure, every member's size and sha256, no broken signature file
  bool trusted = false;  // valid, and the trust policy (threshold) is met
  std::string problem;   // why it is not valid or not trusted (empty when both hold)
  ErrorKind problem_kind = ErrorKind::Internal;
  signing::PolicyResult policy;
  std::vector<std::string> signers;       // key ids named by the signature files, sorted
  std::vector<std::string> beside_keys;   // key ids of *.pub files beside the bundle (never trusted)

  // Exit code: 0 valid and trusted, 4 invalid, 5 untrusted (or the head's error kind).
  ErrorKind outcome() const;
  nlohmann::json to_json() const;
};

// Never throws for a bad bundle: the report says what is wrong. Error(Io/NotFound) only when the
// file cannot be opened.
// `threshold`: valid signatures by distinct trusted keys needed for `trusted`.
VerifyReport verify_bundle(const std::string& path, const Home& home, int threshold = 1);

}  // namespace galleon::pkg
