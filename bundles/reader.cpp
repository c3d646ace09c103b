#include "bundles/reader.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "bundles/archive_util.h"
#include "bundles/member_path.h"
#include "runtime/error.h"
#include "signing/files.h"
#include "signing/sha256.h"

namespace galleon::bundles {

namespace {

constexpr size_t kReadBlock = 1 << 20;
constexpr uint64_t kUstarMaxSize = 077777777777ull;  // larger sizes need a pax "size" record
constexpr uint64_t kEndOfArchive = 1024;              // two zero blocks

[[noreturn]] void refuse(const std::string& what) { throw Error(ErrorKind::Invalid, what); }

const char* file_type_name(mode_t type) {
  switch (type) {
    case AE_IFLNK: return "a symbolic link";
    case AE_IFDIR: return "a directory";
    case AE_IFCHR: return "a character device";
    case AE_IFBLK: return "a block device";
    case AE_IFIFO: return "a fifo";
    case AE_IFSOCK: return "a socket";
    default: return "not a regular file";
  }
}

std::string octal(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", v);
  return buf;
}

struct EntryInfo {
  std::string path;
  uint64_t size = 0;
  uint64_t header_offset = 0;
  uint64_t data_offset = 0;
  unsigned mode = 0;  // permission bits
};

void check_mode(const EntryInfo& info, unsigned expected) {
  if (info.mode != expected)
    refuse("entry " + quote_path(info.path) + ": mode " + octal(info.mode) + ", expected " + octal(expected));
}

// One sequential pass over the tar stream with the structural checks of the bundle format.
// Messages are relative to the bundle; the caller adds the file name.
class Pass {
 public:
  explicit Pass(const std::string& path) : fd_(signing::open_read(path)), a_(archive_read_new()) {
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) throw Error(ErrorKind::Io, std::string("cannot stat: ") + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) refuse("not a regular file");
    file_size_ = static_cast<uint64_t>(st.st_size);
    if (file_size_ == 0) refuse("empty file, expected a galleon bundle (tar archive)");
    if (!a_) throw Error(ErrorKind::Internal, "archive_read_new failed");
    archive_read_support_format_tar(a_.get());
    if (archive_read_open_fd(a_.get(), fd_.get(), kReadBlock) != ARCHIVE_OK) refuse(lib_error("not a tar archive"));
  }

  // The next entry, or false at the end of the archive.
  bool next(EntryInfo& info) {
    archive_entry* e = nullptr;
    int rc = archive_read_next_header(a_.get(), &e);
    if (rc == ARCHIVE_EOF) return false;
    if (rc != ARCHIVE_OK) refuse(lib_error("entry " + std::to_string(count_ + 1) + ": unreadable tar header"));
    ++count_;
    info.path = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
    if (!seen_.insert(info.path).second) refuse("duplicate entry " + quote_path(info.path));
    check_entry(e, info.path);
    info.size = static_cast<uint64_t>(archive_entry_size(e));
    info.mode = static_cast<unsigned>(archive_entry_perm(e));
    info.header_offset = static_cast<uint64_t>(archive_read_header_position(a_.get()));
    info.data_offset = static_cast<uint64_t>(archive_filter_bytes(a_.get(), 0));
    check_layout(info);
    expected_next_ = info.data_offset + detail::round_up_512(info.size);
    return true;
  }

  // Reads the current entry's data into `out` (size already known and bounded).
  std::string read_small(const EntryInfo& info) {
    std::string out;
    out.reserve(info.size);
    read_data(info, [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); });
    return out;
  }

  // Streams the current entry's data to `consume(ptr, n)`, exactly info.size bytes.
  template <class F>
  void read_data(const EntryInfo& info, F&& consume) {
    uint64_t done = 0;
    for (;;) {
      const void* buf = nullptr;
      size_t n = 0;
      la_int64_t offset = 0;
      int rc = archive_read_data_block(a_.get(), &buf, &n, &offset);
      if (rc == ARCHIVE_EOF) break;
      if (rc != ARCHIVE_OK) refuse(lib_error("entry " + quote_path(info.path) + ": truncated or unreadable data"));
      if (static_cast<uint64_t>(offset) != done) refuse("entry " + quote_path(info.path) + ": sparse data is not allowed");
      if (n > info.size - done) refuse("entry " + quote_path(info.path) + ": more data than its size");
      consume(buf, n);
      done += n;
    }
    if (done != info.size)
      refuse("entry " + quote_path(info.path) + ": truncated: " + std::to_string(done) + " of " +
             std::to_string(info.size) + " bytes");
  }

  void skip_data(const EntryInfo& info) {
    if (archive_read_data_skip(a_.get()) != ARCHIVE_OK) refuse(lib_error("entry " + quote_path(info.path) + ": truncated"));
  }

  // After the last entry: the end-of-archive blocks, then nothing.
  void check_end() {
    uint64_t end = expected_next_ + kEndOfArchive;
    if (file_size_ < end)
      refuse("truncated: the archive end (two zero blocks) is missing; file has " + std::to_string(file_size_) +
             " bytes, expected " + std::to_string(end));
    if (file_size_ > end)
      refuse("trailing data after the end of the archive: " + std::to_string(file_size_ - end) + " bytes at offset " +
             std::to_string(end));
    char zeros[kEndOfArchive];
    ssize_t n = ::pread(fd_.get(), zeros, sizeof zeros, static_cast<off_t>(expected_next_));
    if (n != static_cast<ssize_t>(sizeof zeros) || std::any_of(zeros, zeros + sizeof zeros, [](char c) { return c != 0; }))
      refuse("the archive end at offset " + std::to_string(expected_next_) + " is not two zero blocks");
  }

 private:
  std::string lib_error(const std::string& what) const {
    const char* msg = archive_error_string(a_.get());
    return what + " (" + (msg ? msg : "libarchive error") + ")";
  }

  void check_entry(archive_entry* e, const std::string& path) const {
    std::string name = "entry " + quote_path(path);
    if (archive_entry_hardlink(e)) refuse(name + ": a hard link; only regular files are allowed");
    mode_t type = archive_entry_filetype(e);
    if (type != AE_IFREG || archive_entry_symlink(e)) refuse(name + ": " + file_type_name(type) + "; only regular files are allowed");
    if (!is_safe_path(path))
      refuse(name + ": unsafe path; expected a relative path of [A-Za-z0-9._+-] components without '..', at most " +
             std::to_string(kMaxPathLength) + " bytes");
    if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0) refuse(name + ": no size");
    if (archive_entry_uid(e) != 0 || archive_entry_gid(e) != 0) refuse(name + ": owner must be uid 0, gid 0");
    const char* uname = archive_entry_uname(e);
    const char* gname = archive_entry_gname(e);
    if ((uname && *uname) || (gname && *gname)) refuse(name + ": user and group names must be empty");
    if (archive_entry_mtime(e) != 0 || archive_entry_mtime_nsec(e) != 0) refuse(name + ": mtime must be 0");
    if (archive_entry_xattr_count(e) != 0) refuse(name + ": extended attributes are not allowed");
  }

  void check_layout(const EntryInfo& info) const {
    std::string name = "entry " + quote_path(info.path);
    if (info.header_offset != expected_next_)
      refuse(name + ": header at offset " + std::to_string(info.header_offset) + ", expected " + std::to_string(expected_next_));
    uint64_t header_bytes = info.data_offset - info.header_offset;
    if (header_bytes != 512 && info.size <= kUstarMaxSize)
      refuse(name + ": extended (pax or GNU) headers are not allowed for ordinary entries");
    if (info.data_offset % 512 != 0) refuse(name + ": data not 512-byte aligned");
  }

  signing::UniqueFd fd_;
  detail::ReadArchive a_;
  uint64_t file_size_ = 0;
  uint64_t expected_next_ = 0;
  size_t count_ = 0;
  std::set<std::string> seen_;
};

struct Head {
  std::string manifest_bytes;
  std::vector<signing::SignatureBlob> signatures;
  EntryInfo pending;       // the first entry after the signatures
  bool has_pending = false;
  std::vector<EntryLocation> locations;
};

Head read_head(Pass& pass) {
  Head head;
  EntryInfo info;
  if (!pass.next(info)) refuse("no entries; expected " + std::string(kManifestName) + " first");
  if (info.path != kManifestName) refuse("first entry is " + quote_path(info.path) + ", expected " + std::string(kManifestName));
  if (info.size > kMaxManifestSize)
    refuse(std::string(kManifestName) + ": " + std::to_string(info.size) + " bytes, at most " + std::to_string(kMaxManifestSize) + " allowed");
  check_mode(info, 0644);
  head.manifest_bytes = pass.read_small(info);
  head.locations.push_back({info.path, info.data_offset, info.size});
  std::string previous;
  while ((head.has_pending = pass.next(head.pending))) {
    const EntryInfo& s = head.pending;
    if (s.path.substr(0, kSignaturesDir.size()) != kSignaturesDir) break;
    if (!is_signature_path(s.path)) refuse("entry " + quote_path(s.path) + ": expected signatures/<16 hex digit key id>.sig");
    if (!previous.empty() && !(previous < s.path)) refuse("entry " + quote_path(s.path) + ": signatures must be sorted by name");
    if (s.size > kMaxSignatureSize) refuse("entry " + quote_path(s.path) + ": larger than " + std::to_string(kMaxSignatureSize) + " bytes");
    check_mode(s, 0644);
    if (head.signatures.size() == kMaxSignatures) refuse("more than " + std::to_string(kMaxSignatures) + " signatures");
    head.signatures.push_back({s.path, pass.read_small(s)});
    head.locations.push_back({s.path, s.data_offset, s.size});
    previous = s.path;
  }
  return head;
}

// The entry that must come next is `expected`; explain why `found` is wrong.
[[noreturn]] void wrong_entry(const Manifest& m, size_t index, const EntryInfo& found) {
  const Member& expected = m.members[index];
  if (found.path == kManifestName || is_signature_path(found.path) || found.path.substr(0, kSignaturesDir.size()) == kSignaturesDir)
    refuse("entry " + quote_path(found.path) + " is out of place; expected member " + quote_path(expected.path));
  const Member* listed = m.find(found.path);
  if (!listed) refuse("entry " + quote_path(found.path) + " is not listed in the manifest (expected member " + quote_path(expected.path) + ")");
  refuse("member " + quote_path(found.path) + " is out of order or member " + quote_path(expected.path) +
         " is missing; members must follow the manifest order");
}

void check_member_header(const Member& m, const EntryInfo& info) {
  if (info.size != m.size)
    refuse("member " + quote_path(m.path) + ": size in the archive is " + std::to_string(info.size) + ", manifest says " +
           std::to_string(m.size));
  check_mode(info, is_engine(m.role) ? 0755 : 0644);
}

// Walks the members after the head; `handle(member, info)` consumes each one's data.
template <class F>
std::vector<EntryLocation> walk_members(Pass& pass, Head& head, const Manifest& m, F&& handle) {
  std::vector<EntryLocation> locations = head.locations;
  for (size_t i = 0; i < m.members.size(); ++i) {
    EntryInfo info;
    bool present = i == 0 ? head.has_pending : pass.next(info);
    if (!present) refuse("member " + quote_path(m.members[i].path) + " listed in the manifest is missing (archive ends)");
    if (i == 0) info = head.pending;
    if (info.path != m.members[i].path) wrong_entry(m, i, info);
    check_member_header(m.members[i], info);
    handle(m.members[i], info);
    locations.push_back({info.path, info.data_offset, info.size});
  }
  EntryInfo extra;
  if (pass.next(extra)) refuse("entry " + quote_path(extra.path) + " is not listed in the manifest");
  pass.check_end();
  return locations;
}

void hash_member(Pass& pass, const Member& m, const EntryInfo& info, MemberSink* sink) {
  signing::Sha256 hash;
  if (sink) sink->begin(m, info.data_offset);
  pass.read_data(info, [&](const void* p, size_t n) {
    hash.update(p, n);
    if (sink) sink->write(p, n);
  });
  std::string digest = hash.finish_hex();
  if (digest != m.sha256) refuse("member " + quote_path(m.path) + ": sha256 is " + digest + ", manifest says " + m.sha256);
  if (sink) sink->verified(m);
}

}  // namespace

BundleReader::BundleReader(std::string path) : path_(std::move(path)) {
  with_context(path_, [&] {
    Pass pass(path_);
    Head head = read_head(pass);
    manifest_ = parse_manifest(head.manifest_bytes, std::string(kManifestName));
    if (head.has_pending == false && !manifest_.members.empty())
      refuse("member " + quote_path(manifest_.members.front().path) + " listed in the manifest is missing (archive ends)");
    manifest_bytes_ = std::move(head.manifest_bytes);
    id_ = bundle_id_of(manifest_bytes_);
    signatures_ = std::move(head.signatures);
  });
}

namespace {

void check_same_head(const Head& head, const std::string& manifest_bytes, const std::vector<signing::SignatureBlob>& sigs) {
  bool same = head.manifest_bytes == manifest_bytes && head.signatures.size() == sigs.size();
  for (size_t i = 0; same && i < sigs.size(); ++i)
    same = head.signatures[i].name == sigs[i].name && head.signatures[i].bytes == sigs[i].bytes;
  if (!same) refuse("the bundle changed while it was being read");
}

}  // namespace

std::vector<EntryLocation> BundleReader::verify(const SinkChooser& choose) {
  return with_context(path_, [&] {
    Pass pass(path_);
    Head head = read_head(pass);
    check_same_head(head, manifest_bytes_, signatures_);
    return walk_members(pass, head, manifest_, [&](const Member& m, const EntryInfo& info) {
      hash_member(pass, m, info, choose ? choose(m) : nullptr);
    });
  });
}

void BundleReader::extract_member(const std::string& member_path, MemberSink& sink) {
  if (!manifest_.find(member_path))
    throw Error(ErrorKind::NotFound, path_ + ": no member " + quote_path(member_path) + " in the manifest");
  with_context(path_, [&] {
    Pass pass(path_);
    Head head = read_head(pass);
    check_same_head(head, manifest_bytes_, signatures_);
    walk_members(pass, head, manifest_, [&](const Member& m, const EntryInfo& info) {
      if (m.path == member_path)
        hash_member(pass, m, info, &sink);
      else
        pass.skip_data(info);
    });
  });
}

std::vector<EntryLocation> BundleReader::locate_members() {
  return with_context(path_, [&] {
    Pass pass(path_);
    Head head = read_head(pass);
    check_same_head(head, manifest_bytes_, signatures_);
    size_t head_entries = head.locations.size();
    auto all = walk_members(pass, head, manifest_, [&](const Member&, const EntryInfo& info) { pass.skip_data(info); });
    return std::vector<EntryLocation>(all.begin() + static_cast<std::ptrdiff_t>(head_entries), all.end());
  });
}

}  // namespace galleon::bundles
