// libFuzzer target for the bundle reader (tar framing, MANIFEST.json, signatures/*.sig, member
// checks): any input must either verify or throw galleon::Error; never crash, leak or hang.
// BundleReader reads a path, so each input is written to one scratch file per process first.
// Built by CMake with -DGALLEON_FUZZ=ON (docs/fuzzing.md).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bundles/reader.h"
#include "runtime/error.h"

namespace {

const std::string& scratch_path() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir && *dir ? dir : "/tmp") + "/galleon-bundle-fuzz-" +
           std::to_string(::getpid()) + ".galleon";
  }();
  return path;
}

bool write_scratch(const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(scratch_path().c_str(), "wb");
  if (f == nullptr) return false;
  bool ok = size == 0 || std::fwrite(data, 1, size, f) == size;
  return std::fclose(f) == 0 && ok;
}

// Hashes every member without keeping it; the reader checks the manifest and the signatures.
void read_bundle() {
  galleon::bundles::BundleReader reader(scratch_path());
  (void)reader.manifest().members.size();
  (void)reader.signatures().size();
  reader.verify();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (!write_scratch(data, size)) std::abort();
  try {
    read_bundle();
  } catch (const galleon::Error&) {
    // Refused with a message: the expected outcome for hostile input.
  }
  ::unlink(scratch_path().c_str());
  return 0;
}
