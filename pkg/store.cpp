#include "pkg/store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "pkg/crash_point.h"
#include "runtime/error.h"
#include "signing/encoding.h"

namespace galleon::pkg {
namespace {

namespace fsys = std::filesystem;

constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE bundles(
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  version TEXT NOT NULL,
  manifest BLOB NOT NULL,
  trusted INTEGER NOT NULL,
  check_result TEXT NOT NULL,
  check_detail TEXT NOT NULL DEFAULT '');
CREATE INDEX bundles_by_name ON bundles(name);
CREATE TABLE members(
  bundle_id TEXT NOT NULL REFERENCES bundles(id) ON DELETE CASCADE,
  path TEXT NOT NULL,
  role TEXT NOT NULL,
  size INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  PRIMARY KEY(bundle_id, path));
CREATE INDEX members_by_blob ON members(sha256);
CREATE TABLE signatures(
  bundle_id TEXT NOT NULL REFERENCES bundles(id) ON DELETE CASCADE,
  key_id TEXT NOT NULL,
  bytes BLOB NOT NULL,
  PRIMARY KEY(bundle_id, key_id));
CREATE TABLE accepted(
  name TEXT NOT NULL,
  key_id TEXT NOT NULL,
  version TEXT NOT NULL,
  PRIMARY KEY(name, key_id));
)sql";

// Version 2: the digest of the engine that ran the last conformance replay.
constexpr const char* kSchemaV2 =
    "ALTER TABLE bundles ADD COLUMN check_engine TEXT NOT NULL DEFAULT ''";

// Splits "1.2.3-rc1" into numeric parts and suffix.
void split_version(const std::string& v, std::vector<uint64_t>& parts, std::string& suffix) {
  size_t dash = v.find('-');
  suffix = dash == std::string::npos ? "" : v.substr(dash + 1);
  std::string nums = v.substr(0, dash);
  size_t pos = 0;
  while (pos <= nums.size()) {
    size_t dot = nums.find('.', pos);
    if (dot == std::string::npos) dot = nums.size();
    uint64_t n = 0;
    for (size_t i = pos; i < dot; ++i)
      if (nums[i] >= '0' && nums[i] <= '9') n = n * 10 + uint64_t(nums[i] - '0');
    parts.push_back(n);
    pos = dot + 1;
  }
}

BundleRow row_of(const sql::Stmt& s) {
  return {s.text(0), s.text(1), s.text(2), s.blob(3), s.integer(4) != 0,
          s.text(5), s.text(6), s.text(7)};
}

constexpr const char* kBundleColumns =
    "SELECT id, name, version, manifest, trusted, check_result, check_detail, check_engine "
    "FROM bundles ";

std::vector<BundleRow> collect(sql::Stmt& s) {
  std::vector<BundleRow> rows;
  while (s.step()) rows.push_back(row_of(s));
  return rows;
}

void sort_rows(std::vector<BundleRow>& rows) {
  std::sort(rows.begin(), rows.end(), [](const BundleRow& a, const BundleRow& b) {
    if (a.name != b.name) return a.name < b.name;
    int c = compare_versions(a.version, b.version);
    return c != 0 ? c < 0 : a.id < b.id;
  });
}

std::string list_ids(const std::vector<BundleRow>& rows) {
  std::string out;
  for (const auto& r : rows) out += "\n  " + r.id + " (" + r.name + " " + r.version + ")";
  return out;
}

}  // namespace

int compare_versions(const std::string& a, const std::string& b) {
  std::vector<uint64_t> pa, pb;
  std::string sa, sb;
  split_version(a, pa, sa);
  split_version(b, pb, sb);
  size_t n = std::max(pa.size(), pb.size());
  for (size_t i = 0; i < n; ++i) {
    uint64_t x = i < pa.size() ? pa[i] : 0, y = i < pb.size() ? pb[i] : 0;
    if (x != y) return x < y ? -1 : 1;
  }
  if (sa == sb) return 0;
  if (sa.empty()) return 1;
  if (sb.empty()) return -1;
  return sa < sb ? -1 : 1;
}

Store::Store(Home home, StoreMode mode, FileSystem& fs) : home_(std::move(home)), fs_(fs) {
  ensure_home(home_);
  if (mode == StoreMode::Write) {
    std::string lock_path = home_.root + "/lock";
    lock_ = signing::UniqueFd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (lock_.get() < 0)
      fail(ErrorKind::Io, lock_path + ": cannot open the store lock: " + std::strerror(errno));
    while (flock(lock_.get(), LOCK_EX) != 0)
      if (errno != EINTR)
        fail(ErrorKind::Io, lock_path + ": cannot lock the store: " + std::strerror(errno));
  }
  open_db();
  if (mode == StoreMode::Write) sweep_tmp();
}

void Store::open_db() {
  db_ = std::make_unique<sql::Db>(home_.db());
  db_->exec("PRAGMA busy_timeout = 30000");
  db_->exec("PRAGMA journal_mode = WAL");
  db_->exec("PRAGMA synchronous = FULL");
  db_->exec("PRAGMA foreign_keys = ON");
  migrate();
}

void Store::migrate() {
  sql::Transaction tx(*db_);
  db_->exec("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)");
  sql::Stmt q(*db_, "SELECT max(version) FROM schema_version");
  int64_t version = q.step() ? q.integer(0) : 0;
  q.run();
  if (version > kStoreSchemaVersion)
    fail(ErrorKind::Unsupported, home_.db() + ": store schema version " + std::to_string(version) +
                                     " is newer than this galleon understands (" +
                                     std::to_string(kStoreSchemaVersion) + ")");
  if (version < 1) db_->exec(kSchemaV1);
  if (version < 2) db_->exec(kSchemaV2);
  if (version < kStoreSchemaVersion) {
    db_->exec("DELETE FROM schema_version");
    db_->exec("INSERT INTO schema_version(version) VALUES (" +
              std::to_string(kStoreSchemaVersion) + ")");
  }
  tx.commit();
}

std::string Store::blob_dir(const std::string& sha256) const {
  return home_.blobs() + "/" + sha256.substr(0, 2);
}

std::string Store::blob_path(const std::string& sha256) const {
  return blob_dir(sha256) + "/" + sha256.substr(2);
}

bool Store::has_blob(const std::string& sha256) const {
  struct stat st {};
  return ::stat(blob_path(sha256).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::vector<std::string> Store::blob_files() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& dir : fsys::directory_iterator(home_.blobs(), ec)) {
    std::string prefix = dir.path().filename().string();
    if (!dir.is_directory() || !signing::is_lower_hex(prefix, 2)) continue;
    for (const auto& f : fsys::directory_iterator(dir.path(), ec)) {
      std::string sha = prefix + f.path().filename().string();
      if (signing::is_sha256_hex(sha)) out.push_back(sha);
    }
  }
  if (ec) fail(ErrorKind::Io, home_.blobs() + ": cannot list the blobs: " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

std::set<std::string> Store::referenced_blobs() {
  sql::Stmt s(*db_, "SELECT DISTINCT sha256 FROM members");
  std::set<std::string> out;
  while (s.step()) out.insert(s.text(0));
  return out;
}

std::vector<BundleRow> Store::bundles() {
  sql::Stmt s(*db_, std::string(kBundleColumns));
  auto rows = collect(s);
  sort_rows(rows);
  return rows;
}

std::optional<BundleRow> Store::find(const std::string& id) {
  sql::Stmt s(*db_, std::string(kBundleColumns) + "WHERE id = ?1");
  s.bind(1, id);
  auto rows = collect(s);
  if (rows.empty()) return std::nullopt;
  return rows.front();
}

BundleRow Store::resolve(const std::string& ref) {
  if (ref.empty()) fail(ErrorKind::Usage, "expected a bundle name or id, got an empty string");
  size_t at = ref.find('@');
  std::string name = ref.substr(0, at);
  sql::Stmt s(*db_, std::string(kBundleColumns) + "WHERE name = ?1");
  s.bind(1, name);
  auto rows = collect(s);
  sort_rows(rows);
  if (at != std::string::npos) {
    std::string version = ref.substr(at + 1);
    std::erase_if(rows, [&](const BundleRow& r) { return r.version != version; });
    if (rows.empty()) fail(ErrorKind::NotFound, ref + ": no installed bundle " + name +
                                                    " with version " + version);
  }
  if (!rows.empty()) {
    if (rows.size() > 1 && compare_versions(rows[rows.size() - 2].version, rows.back().version) == 0)
      fail(ErrorKind::Usage, ref + ": several installed bundles have this name and version; "
                                   "give the id:" + list_ids(rows));
    return rows.back();
  }
  std::string hex = ref.rfind("sha256:", 0) == 0 ? ref.substr(7) : ref;
  bool hexish = !hex.empty() && hex.size() <= 64 &&
                std::all_of(hex.begin(), hex.end(), [](char c) {
                  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                });
  if (hexish) {
    sql::Stmt p(*db_, std::string(kBundleColumns) + "WHERE substr(id, 1, ?2) = ?1");
    std::string prefix = "sha256:" + hex;
    p.bind(1, prefix).bind(2, int64_t(prefix.size()));
    auto matches = collect(p);
    if (matches.size() == 1) return matches.front();
    if (matches.size() > 1)
      fail(ErrorKind::Usage, ref + ": ambiguous id prefix, it matches:" + list_ids(matches));
  }
  fail(ErrorKind::NotFound, ref + ": no installed bundle has this name or id (see galleon list)");
}

std::vector<MemberRow> Store::members(const std::string& id) {
  sql::Stmt s(*db_, "SELECT path, role, size, sha256 FROM members WHERE bundle_id = ?1 ORDER BY path");
  s.bind(1, id);
  std::vector<MemberRow> out;
  while (s.step()) out.push_back({s.text(0), s.text(1), uint64_t(s.integer(2)), s.text(3)});
  return out;
}

std::vector<SignatureRow> Store::signatures(const std::string& id) {
  sql::Stmt s(*db_, "SELECT key_id, bytes FROM signatures WHERE bundle_id = ?1 ORDER BY key_id");
  s.bind(1, id);
  std::vector<SignatureRow> out;
  while (s.step()) out.push_back({s.text(0), s.blob(1)});
  return out;
}

std::optional<std::string> Store::accepted_version(const std::string& name,
                                                   const std::string& key_id) {
  sql::Stmt s(*db_, "SELECT version FROM accepted WHERE name = ?1 AND key_id = ?2");
  s.bind(1, name).bind(2, key_id);
  std::optional<std::string> out;
  if (s.step()) out = s.text(0);
  s.run();
  return out;
}

namespace {

// "signatures/<keyid>.sig" -> "<keyid>"
std::string key_of(const signing::SignatureBlob& sig) {
  std::string n = sig.name;
  if (n.rfind("signatures/", 0) == 0) n = n.substr(11);
  if (n.size() > 4 && n.compare(n.size() - 4, 4, ".sig") == 0) n.resize(n.size() - 4);
  return n;
}

void insert_rows(sql::Db& db, const NewBundle& b, const std::string& id) {
  sql::Stmt bundle(db,
                   "INSERT INTO bundles(id, name, version, manifest, trusted, check_result) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  bundle.bind(1, id).bind(2, b.manifest.name).bind(3, b.manifest.version);
  bundle.bind_blob(4, b.manifest_bytes).bind(5, int64_t(b.trusted)).bind(6, kCheckNotRun);
  bundle.run();
  sql::Stmt member(db, "INSERT INTO members(bundle_id, path, role, size, sha256) "
                       "VALUES (?1, ?2, ?3, ?4, ?5)");
  for (const auto& m : b.manifest.members) {
    member.bind(1, id).bind(2, m.path).bind(3, bundles::role_name(m.role));
    member.bind(4, int64_t(m.size)).bind(5, m.sha256);
    member.run();
  }
  sql::Stmt sig(db, "INSERT OR REPLACE INTO signatures(bundle_id, key_id, bytes) VALUES (?1, ?2, ?3)");
  for (const auto& s : b.signatures) {
    sig.bind(1, id).bind(2, key_of(s)).bind_blob(3, s.bytes);
    sig.run();
  }
}

}  // namespace

void Store::record(const NewBundle& b) {
  std::string id = bundles::bundle_id_of(b.manifest_bytes);
  sql::Transaction tx(*db_);
  if (!find(id)) {
    insert_rows(*db_, b, id);
  } else if (b.trusted) {
    sql::Stmt t(*db_, "UPDATE bundles SET trusted = 1 WHERE id = ?1");
    t.bind(1, id);
    t.run();
  }
  sql::Stmt floor(*db_, "INSERT OR REPLACE INTO accepted(name, key_id, version) VALUES (?1, ?2, ?3)");
  for (const auto& key : b.accepted_keys) {
    auto current = accepted_version(b.manifest.name, key);
    if (current && compare_versions(*current, b.manifest.version) >= 0) continue;
    floor.bind(1, b.manifest.name).bind(2, key).bind(3, b.manifest.version);
    floor.run();
  }
  tx.commit();
}

void Store::set_check(const std::string& id, const std::string& result, const std::string& detail,
                      const std::string& engine_sha256) {
  sql::Transaction tx(*db_);
  sql::Stmt s(*db_, "UPDATE bundles SET check_result = ?2, check_detail = ?3, check_engine = ?4 "
                    "WHERE id = ?1");
  s.bind(1, id).bind(2, result).bind(3, detail).bind(4, engine_sha256);
  s.run();
  tx.commit();
}

void Store::remove(const std::string& id) {
  sql::Transaction tx(*db_);
  for (const char* table : {"members", "signatures"}) {
    sql::Stmt s(*db_, std::string("DELETE FROM ") + table + " WHERE bundle_id = ?1");
    s.bind(1, id);
    s.run();
  }
  sql::Stmt s(*db_, "DELETE FROM bundles WHERE id = ?1");
  s.bind(1, id);
  s.run();
  crash_point("remove.before-commit");
  tx.commit();
  crash_point("remove.after-commit");
}

size_t Store::sweep_tmp() {
  size_t n = 0;
  std::error_code ec;
  for (const auto& e : fsys::directory_iterator(home_.tmp(), ec)) {
    std::error_code rm;
    fsys::remove_all(e.path(), rm);
    if (rm) fail(ErrorKind::Io, e.path().string() + ": cannot remove the leftover: " + rm.message());
    ++n;
  }
  if (ec) fail(ErrorKind::Io, home_.tmp() + ": cannot list: " + ec.message());
  if (n > 0) fs_.fsync_dir(home_.tmp());
  return n;
}

}  // namespace galleon::pkg
