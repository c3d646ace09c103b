// SHA-256 (FIPS 180-4) for the runtime, which may not link OpenSSL (the engine is fully static
// and dependency-free). Used for logits_sha256. Checked against OpenSSL in the tests.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace galleon {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::array<uint8_t, 32> finish();
  std::string finish_hex();

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string to_hex(const uint8_t* data, size_t n);

}  // namespace galleon
