// signing: SHA-256 through OpenSSL EVP, streaming, over buffers and files.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace galleon::signing {

using Digest = std::array<unsigned char, 32>;

// Incremental SHA-256. Feed update() any number of times, then finish() once.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;

  void update(const void* data, size_t size);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  Digest finish();
  std::string finish_hex();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

Digest sha256(std::string_view bytes);
std::string sha256_hex(std::string_view bytes);

struct FileDigest {
  uint64_t size = 0;
  std::string sha256;  // lowercase hex
};

// Hashes a whole file, streaming; Error(NotFound/Io) naming the file on failure.
FileDigest sha256_file(const std::string& path);
// Hashes `size` bytes of `path` starting at `offset` (Error(Invalid) when the file is shorter).
FileDigest sha256_file_range(const std::string& path, uint64_t offset, uint64_t size);

}  // namespace galleon::signing
