#include "signing/trust.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "runtime/error.h"
#include "signing/files.h"

namespace galleon::signing {

namespace fs = std::filesystem;

namespace {

void require_key_id(const std::string& key_id) {
  if (!is_key_id(key_id))
    throw Error(ErrorKind::Usage, "'" + key_id + "' is not a key id (16 lowercase hex digits)");
}

void make_dirs(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(ErrorKind::Io, dir + ": cannot create folder: " + ec.message());
}

}  // namespace

TrustStore::TrustStore(std::string dir) : dir_(std::move(dir)) {}

std::string TrustStore::trusted_path(const std::string& key_id) const {
  return (fs::path(dir_) / (key_id + ".pub")).string();
}

std::string TrustStore::removed_path(const std::string& key_id) const {
  return (fs::path(dir_) / "removed" / (key_id + ".pub")).string();
}

std::optional<PublicKey> TrustStore::load_checked(const std::string& path, const std::string& key_id) const {
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  PublicKey key = load_public_key(path);
  if (key.key_id() != key_id)
    throw Error(ErrorKind::Invalid, path + ": holds key " + key.key_id() + ", expected " + key_id);
  return key;
}

PublicKey TrustStore::add_file(const std::string& public_key_path) {
  return add(load_public_key(public_key_path));
}

PublicKey TrustStore::add(const PublicKey& key) {
  std::string id = key.key_id();
  make_dirs(dir_);
  write_file_atomic(trusted_path(id), key.to_line(), 0644);
  std::error_code ec;
  fs::remove(removed_path(id), ec);
  return key;
}

std::vector<PublicKey> TrustStore::list() const {
  std::vector<PublicKey> keys;
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return keys;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || entry.path().extension() != ".pub") continue;
    std::string id = name.substr(0, name.size() - 4);
    if (!is_key_id(id)) continue;
    keys.push_back(*load_checked(entry.path().string(), id));
  }
  std::sort(keys.begin(), keys.end(),
            [](const PublicKey& a, const PublicKey& b) { return a.key_id() < b.key_id(); });
  return keys;
}

void TrustStore::remove(const std::string& key_id) {
  require_key_id(key_id);
  std::string from = trusted_path(key_id);
  if (!lookup(key_id)) throw Error(ErrorKind::NotFound, "key " + key_id + " is not trusted");
  std::string to = removed_path(key_id);
  make_dirs(fs::path(to).parent_path().string());
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) throw Error(ErrorKind::Io, from + ": cannot move to " + to + ": " + ec.message());
  fsync_parent_dir(from);
}

std::optional<PublicKey> TrustStore::lookup(const std::string& key_id) const {
  if (!is_key_id(key_id)) return std::nullopt;
  return load_checked(trusted_path(key_id), key_id);
}

std::optional<PublicKey> TrustStore::lookup_removed(const std::string& key_id) const {
  if (!is_key_id(key_id)) return std::nullopt;
  return load_checked(removed_path(key_id), key_id);
}

}  // namespace galleon::signing
