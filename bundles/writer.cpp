#include "bundles/writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "bundles/archive_util.h"
#include "bundles/member_path.h"
#include "bundles/reader.h"
#include "runtime/error.h"
#include "signing/files.h"
#include "signing/sha256.h"

namespace galleon::bundles {

namespace {

constexpr size_t kCopyChunk = 1 << 20;

class TarWriter {
 public:
  TarWriter(int fd, std::string path) : a_(archive_write_new()), path_(std::move(path)) {
    if (!a_) throw Error(ErrorKind::Internal, "archive_write_new failed");
    check(archive_write_set_format_pax_restricted(a_.get()), "set format");
    check(archive_write_set_bytes_per_block(a_.get(), 10240), "set block size");
    check(archive_write_set_bytes_in_last_block(a_.get(), 1), "set last block");
    check(archive_write_open_fd(a_.get(), fd), "open");
  }

  // Writes the header of a regular file; returns the offset its data starts at.
  uint64_t begin_entry(const std::string& name, uint64_t size, int mode) {
    detail::Entry e(archive_entry_new());
    archive_entry_set_pathname(e.get(), name.c_str());
    archive_entry_set_filetype(e.get(), AE_IFREG);
    archive_entry_set_perm(e.get(), static_cast<mode_t>(mode));
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(size));
    archive_entry_set_mtime(e.get(), 0, 0);
    archive_entry_set_uid(e.get(), 0);
    archive_entry_set_gid(e.get(), 0);
    check(archive_write_header(a_.get(), e.get()), "write header of " + name);
    auto offset = static_cast<uint64_t>(archive_filter_bytes(a_.get(), 0));
    if (offset % 512 != 0) throw Error(ErrorKind::Internal, name + ": data offset not 512-aligned");
    return offset;
  }

  void data(const void* p, size_t n, const std::string& name) {
    la_ssize_t w = archive_write_data(a_.get(), p, n);
    if (w < 0 || static_cast<size_t>(w) != n) check(ARCHIVE_FATAL, "write data of " + name);
  }

  void end_entry(const std::string& name) { check(archive_write_finish_entry(a_.get()), "finish " + name); }

  uint64_t close() {
    check(archive_write_close(a_.get()), "close");
    return static_cast<uint64_t>(archive_filter_bytes(a_.get(), -1));
  }

 private:
  void check(int rc, const std::string& what) {
    if (rc == ARCHIVE_OK) return;
    const char* msg = archive_error_string(a_.get());
    throw Error(ErrorKind::Io, path_ + ": " + what + ": " + (msg ? msg : "libarchive error"));
  }

  detail::WriteArchive a_;
  std::string path_;
};

EntryLocation write_small(TarWriter& tar, const std::string& name, const std::string& bytes) {
  uint64_t offset = tar.begin_entry(name, bytes.size(), 0644);
  tar.data(bytes.data(), bytes.size(), name);
  tar.end_entry(name);
  return {name, offset, bytes.size()};
}

// Streams one member from its source, hashing it, and checks it against the manifest.
EntryLocation write_member(TarWriter& tar, const Member& m, const MemberSource& src) {
  uint64_t offset = tar.begin_entry(m.path, m.size, is_engine(m.role) ? 0755 : 0644);
  signing::UniqueFd fd = signing::open_read(src.file);
  signing::Sha256 hash;
  std::vector<char> buf(kCopyChunk);
  uint64_t done = 0;
  while (done < m.size) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), m.size - done));
    ssize_t n = ::pread(fd.get(), buf.data(), want, static_cast<off_t>(src.offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(ErrorKind::Io, src.file + ": read error: " + std::strerror(errno));
    if (n == 0)
      throw Error(ErrorKind::Invalid, "member " + quote_path(m.path) + ": source " + src.file + " holds " +
                                          std::to_string(done) + " bytes, manifest says " + std::to_string(m.size));
    hash.update(buf.data(), static_cast<size_t>(n));
    tar.data(buf.data(), static_cast<size_t>(n), m.path);
    done += static_cast<uint64_t>(n);
  }
  std::string digest = hash.finish_hex();
  if (digest != m.sha256)
    throw Error(ErrorKind::Invalid, "member " + quote_path(m.path) + ": source " + src.file + " has sha256 " + digest +
                                        ", manifest says " + m.sha256);
  tar.end_entry(m.path);
  return {m.path, offset, m.size};
}

std::vector<std::pair<std::string, std::string>> signature_entries(const std::vector<signing::Signature>& sigs,
                                                                   const std::string& id) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const signing::Signature& s : sigs) {
    if (s.bundle_id != id)
      throw Error(ErrorKind::Invalid, "signature by key " + s.key_id + " signs " + s.bundle_id + ", not this bundle " + id);
    out.emplace_back(s.member_name(), s.to_json());
  }
  std::sort(out.begin(), out.end());
  for (size_t i = 1; i < out.size(); ++i)
    if (out[i - 1].first == out[i].first) throw Error(ErrorKind::Invalid, "two signatures by the same key: " + out[i].first);
  return out;
}

const MemberSource& source_for(const std::map<std::string, MemberSource>& sources, const Member& m) {
  auto it = sources.find(m.path);
  if (it == sources.end()) throw Error(ErrorKind::Usage, "member " + quote_path(m.path) + ": no source file given");
  return it->second;
}

WriteResult write_tar(int fd, const std::string& tmp, const std::string& manifest_bytes, const Manifest& manifest,
                      const std::vector<std::pair<std::string, std::string>>& sigs,
                      const std::map<std::string, MemberSource>& sources) {
  WriteResult result;
  result.bundle_id = bundle_id_of(manifest_bytes);
  TarWriter tar(fd, tmp);
  result.entries.push_back(write_small(tar, std::string(kManifestName), manifest_bytes));
  for (const auto& [name, bytes] : sigs) result.entries.push_back(write_small(tar, name, bytes));
  for (const Member& m : manifest.members)
    result.entries.push_back(with_context(tmp, [&] { return write_member(tar, m, source_for(sources, m)); }));
  result.file_size = tar.close();
  return result;
}

}  // namespace

WriteResult write_bundle(const std::string& out_path, const Manifest& manifest,
                         const std::vector<signing::Signature>& signatures,
                         const std::map<std::string, MemberSource>& sources) {
  const std::string manifest_bytes = manifest.to_bytes();
  const auto sigs = signature_entries(signatures, bundle_id_of(manifest_bytes));
  const std::string tmp = out_path + ".tmp";
  int raw = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (raw < 0) throw Error(ErrorKind::Io, tmp + ": cannot create: " + std::strerror(errno));
  signing::UniqueFd fd(raw);
  try {
    WriteResult result = write_tar(fd.get(), tmp, manifest_bytes, manifest, sigs, sources);
    if (::fsync(fd.get()) != 0) throw Error(ErrorKind::Io, tmp + ": fsync: " + std::strerror(errno));
    fd.reset();
    if (::rename(tmp.c_str(), out_path.c_str()) != 0)
      throw Error(ErrorKind::Io, out_path + ": rename: " + std::strerror(errno));
    signing::fsync_parent_dir(out_path);
    return result;
  } catch (...) {
    fd.reset();
    ::unlink(tmp.c_str());
    throw;
  }
}

WriteResult add_signature(const std::string& bundle_path, const signing::Signature& signature,
                          const std::string& out_path) {
  BundleReader reader(bundle_path);
  if (signature.bundle_id != reader.id())
    throw Error(ErrorKind::Invalid, bundle_path + ": the signature by key " + signature.key_id + " signs " +
                                        signature.bundle_id + ", the bundle is " + reader.id());
  std::vector<signing::Signature> sigs;
  for (const signing::SignatureBlob& blob : reader.signatures()) {
    signing::Signature s = signing::parse_signature(blob.bytes, bundle_path + ": " + blob.name);
    if (s.key_id != signature.key_id) sigs.push_back(std::move(s));
  }
  sigs.push_back(signature);
  std::map<std::string, MemberSource> sources;
  for (const EntryLocation& loc : reader.locate_members()) sources[loc.path] = MemberSource{bundle_path, loc.offset};
  return write_bundle(out_path.empty() ? bundle_path : out_path, reader.manifest(), sigs, sources);
}

}  // namespace galleon::bundles
