// pkg: the offline store (docs/store.md). store.db (SQLite: bundles, members, signatures, the
// highest accepted version per name and key) and content-addressed, read-only blobs under
// blobs/sha256/ab/cdef..., shared by every bundle that holds the same bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "bundles/manifest.h"
#include "pkg/fs.h"
#include "pkg/home.h"
#include "pkg/sqlite.h"
#include "signing/files.h"
#include "signing/policy.h"

namespace galleon::pkg {

inline constexpr int kStoreSchemaVersion = 2;

// Result of the last conformance replay of an installed bundle.
inline constexpr const char* kCheckIdentical = "identical";
inline constexpr const char* kCheckMismatch = "mismatch";
inline constexpr const char* kCheckNotRun = "not-checked";
inline constexpr const char* kCheckNone = "no-transcript";
inline constexpr const char* kCheckOtherPlatform = "other-platform";
// The bundle's engine is for another platform, and this host's engine reproduced the transcript:
// `run` may use the host's engine (design brief, engine contract).
inline constexpr const char* kCheckHostEngine = "host-engine-identical";

struct BundleRow {
  std::string id;  // "sha256:<hex>"
  std::string name;
  std::string version;
  std::string manifest_bytes;
  bool trusted = false;       // the signature threshold was met at install time
  std::string check_result;   // one of the kCheck* values
  std::string check_detail;   // where a replay diverged
  std::string check_engine;   // sha256 of the engine that ran the last replay
};

struct MemberRow {
  std::string path;
  std::string role;
  uint64_t size = 0;
  std::string sha256;
};

struct SignatureRow {
  std::string key_id;
  std::string bytes;  // the signature file as found in the bundle
};

// What one install records, in one transaction.
struct NewBundle {
  std::string manifest_bytes;
  bundles::Manifest manifest;
  bool trusted = false;
  std::vector<signing::SignatureBlob> signatures;
  std::vector<std::string> accepted_keys;  // trusted signers: their rollback floor moves up
};

// Compares two bundle versions (docs/bundle-format.md): numeric parts first; at equal parts a
// version without suffix is newer than one with a suffix; suffixes compare bytewise.
int compare_versions(const std::string& a, const std::string& b);

enum class StoreMode {
  Read,   // no lock; readers never block writers (WAL)
  Write,  // holds the store lock (flock on <home>/lock) and sweeps tmp/ leftovers on open
};

class Store {
 public:
  Store(Home home, StoreMode mode, FileSystem& fs = default_fs());

  const Home& home() const { return home_; }
  FileSystem& fs() { return fs_; }
  sql::Db& db() { return *db_; }

  // blobs/sha256/ab/cdef...
  std::string blob_path(const std::string& sha256) const;
  std::string blob_dir(const std::string& sha256) const;
  bool has_blob(const std::string& sha256) const;
  // Hex digests of the blob files present on disk (names that are not digests are skipped).
  std::vector<std::string> blob_files() const;
  // Digests referenced by at least one member row.
  std::set<std::string> referenced_blobs();

  // Sorted by name, then version (newest last).
  std::vector<BundleRow> bundles();
  std::optional<BundleRow> find(const std::string& id);
  // NAME[@VERSION] (newest version when none), "sha256:<hex>" or a unique prefix of the hex.
  // Error(NotFound) when nothing matches, Error(Usage) when a prefix is ambiguous.
  BundleRow resolve(const std::string& ref);
  std::vector<MemberRow> members(const std::string& id);
  std::vector<SignatureRow> signatures(const std::string& id);
  // Highest version of `name` accepted from `key_id`, if any.
  std::optional<std::string> accepted_version(const std::string& name, const std::string& key_id);

  // Records bundle, members, signatures and rollback floors in one transaction. For an id
  // already recorded only the trust flag (when now trusted) and the floors are updated.
  void record(const NewBundle& bundle);
  void set_check(const std::string& id, const std::string& result, const std::string& detail,
                 const std::string& engine_sha256 = "");
  // Deletes the bundle's rows (blobs stay until gc). Rollback floors are kept.
  void remove(const std::string& id);
  // Removes everything in tmp/; returns how many entries.
  size_t sweep_tmp();

 private:
  void open_db();
  void migrate();

  Home home_;
  FileSystem& fs_;
  signing::UniqueFd lock_;
  std::unique_ptr<sql::Db> db_;
};

}  // namespace galleon::pkg
