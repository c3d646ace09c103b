// bundles: the deterministic bundle writer (docs/bundle-format.md). Same manifest, signatures and
// member bytes give the same file, whatever the folder, umask, time zone or user.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "bundles/manifest.h"
#include "signing/signature.h"

namespace galleon::bundles {

// Where a member's bytes come from: `size` bytes (the manifest's) of `file` starting at `offset`.
struct MemberSource {
  std::string file;
  uint64_t offset = 0;
};

// Where an entry's data lies inside the bundle file (512-aligned).
struct EntryLocation {
  std::string path;
  uint64_t offset = 0;
  uint64_t size = 0;
};

struct WriteResult {
  std::string bundle_id;
  uint64_t file_size = 0;
  std::vector<EntryLocation> entries;  // every entry in file order, MANIFEST.json first
};

// Writes `out_path`.tmp, fsyncs it and renames it to `out_path`. Member data is streamed from
// `sources` (keyed by member path) and hashed on the way: a size or sha256 differing from the
// manifest is Error(Invalid) and leaves nothing behind. Signatures must sign manifest.id().
WriteResult write_bundle(const std::string& out_path, const Manifest& manifest,
                         const std::vector<signing::Signature>& signatures,
                         const std::map<std::string, MemberSource>& sources);

// Rewrites `bundle_path` (or writes `out_path` when not empty) with `signature` added (replacing
// an earlier one by the same key). The bundle id does not change; every member is re-verified.
WriteResult add_signature(const std::string& bundle_path, const signing::Signature& signature,
                          const std::string& out_path = "");

}  // namespace galleon::bundles
