// pkg: installing bundle files into the store (docs/store.md, "Install"), and replaying an
// installed bundle's conformance transcript.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "pkg/store.h"

namespace galleon::pkg {

// Bytes verified so far of one bundle, and its total member bytes.
using Progress = std::function<void(uint64_t done, uint64_t total)>;

struct InstallOptions {
  bool allow_untrusted = false;
  bool allow_downgrade = false;
  bool no_check = false;
  int threshold = 1;  // valid signatures by distinct trusted keys required
  Progress progress;  // called while members are hashed and copied (e.g. a bar on a TTY)
  // This host's galleon-engine: replays the transcript of a bundle whose engine is built for
  // another platform (empty: such bundles are recorded as "other-platform").
  std::string host_engine;
};

struct InstallOutcome {
  std::string file;
  std::string id;
  std::string name;
  std::string version;
  bool already_installed = false;
  bool trusted = false;
  std::vector<std::string> signers;  // trusted signers
  size_t new_blobs = 0;
  uint64_t new_bytes = 0;
  std::string check_result;  // kCheck* value
  std::string check_detail;
};

// Loud messages for the user (stderr in the CLI).
using Warn = std::function<void(const std::string&)>;

// PATH itself when it is a file; every "*.galleon" in it (sorted) when it is a folder.
// Error(NotFound) when it does not exist or the folder holds no bundle.
std::vector<std::string> bundle_files(const std::string& path);

// Installs one bundle file: verifies the manifest and the signatures against the trust store
// (refusing untrusted bundles and downgrades unless allowed), streams every member into tmp/
// while hashing, moves the new blobs into blobs/, records everything in one transaction, then
// (unless no_check) replays the conformance transcript and records its result. Any error before
// the transaction leaves the store as it was. A conformance mismatch does not throw: the bundle
// stays installed with check_result "mismatch" (see docs/store.md).
InstallOutcome install_bundle(Store& store, const std::string& file, const InstallOptions& options,
                              const Warn& warn);

struct CheckOutcome {
  std::string result;  // kCheck* value
  std::string detail;
};

// Replays the transcript of an installed bundle with its own engine blob on its weights blob
// (both re-hashed first) and records the result. A bundle whose engine is for another platform
// is replayed with `host_engine` when given (result kCheckHostEngine when identical).
CheckOutcome check_installed(Store& store, const BundleRow& bundle,
                             const std::string& host_engine = "");

// Replays the transcript of an installed bundle on a GPU: its CUDA engine blob (role
// engine-cuda, re-hashed first) with `--device device` (cuda or cuda:N). The recorded check,
// which decides whether the bundle may run, is left as it is. kCheckNone when the bundle has
// no CUDA engine, kCheckOtherPlatform when its engines are for another platform.
CheckOutcome check_installed_on_gpu(Store& store, const BundleRow& bundle,
                                    const std::string& device);

}  // namespace galleon::pkg
