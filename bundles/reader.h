// bundles: the verifying bundle reader (docs/bundle-format.md, "Reading"). Every refusal is
// Error(Invalid) naming the bundle file, the entry or field, and what was expected.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bundles/manifest.h"
#include "bundles/writer.h"
#include "signing/policy.h"

namespace galleon::bundles {

inline constexpr uint64_t kMaxSignatureSize = 64 * 1024;
inline constexpr size_t kMaxSignatures = 64;

// Receives one member's bytes while it is read and hashed.
class MemberSink {
 public:
  virtual ~MemberSink() = default;
  virtual void begin(const Member& member, uint64_t data_offset) {
    (void)member;
    (void)data_offset;
  }
  virtual void write(const void* data, size_t size) = 0;
  // Called only after the member's size and sha256 matched the manifest. When an exception leaves
  // the reader instead, the bytes received so far must be thrown away.
  virtual void verified(const Member& member) { (void)member; }
};

// Chooses a sink per member (nullptr: hash only).
using SinkChooser = std::function<MemberSink*(const Member&)>;

class BundleReader {
 public:
  // Opens the bundle and reads its head: MANIFEST.json (canonical, at most 1 MiB) and the
  // signature entries (signatures/<keyid>.sig, sorted, at most 64 KiB each). Members are not read.
  explicit BundleReader(std::string path);

  const std::string& path() const { return path_; }
  const Manifest& manifest() const { return manifest_; }
  const std::string& manifest_bytes() const { return manifest_bytes_; }
  // "sha256:" + hex sha256 of MANIFEST.json.
  const std::string& id() const { return id_; }
  // The signature entries as stored (names "signatures/<keyid>.sig"); judge them with
  // signing::check_policy.
  const std::vector<signing::SignatureBlob>& signatures() const { return signatures_; }

  // One full pass: reads every member in manifest order, streaming each to the sink chosen for it
  // while hashing, checks sizes and digests, and checks the archive end. Returns the data
  // location of every entry. Each call re-reads the file (and checks its head did not change).
  std::vector<EntryLocation> verify(const SinkChooser& choose = {});

  // Streams one member to `sink`, verified against the manifest (other members are skipped).
  void extract_member(const std::string& member_path, MemberSink& sink);

  // Data offsets of the members (manifest order) for in-place mmap. Checks the archive structure
  // (headers, order, sizes, alignment) but does not hash member data: verify() first.
  std::vector<EntryLocation> locate_members();

 private:
  std::string path_;
  Manifest manifest_;
  std::string manifest_bytes_;
  std::string id_;
  std::vector<signing::SignatureBlob> signatures_;
};

}  // namespace galleon::bundles
