#include "signing/sha256.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "runtime/error.h"
#include "signing/encoding.h"
#include "signing/files.h"
#include "signing/openssl_util.h"

namespace galleon::signing {

struct Sha256::Impl {
  detail::MdCtxPtr ctx = detail::new_md_ctx();
  bool finished = false;
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  if (EVP_DigestInit_ex(impl_->ctx.get(), EVP_sha256(), nullptr) != 1)
    detail::throw_openssl(ErrorKind::Internal, "EVP_DigestInit_ex(sha256)");
}
Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

void Sha256::update(const void* data, size_t size) {
  if (impl_->finished) throw Error(ErrorKind::Internal, "Sha256::update after finish");
  if (size && EVP_DigestUpdate(impl_->ctx.get(), data, size) != 1)
    detail::throw_openssl(ErrorKind::Internal, "EVP_DigestUpdate");
}

Digest Sha256::finish() {
  if (impl_->finished) throw Error(ErrorKind::Internal, "Sha256::finish called twice");
  impl_->finished = true;
  Digest out{};
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(impl_->ctx.get(), out.data(), &n) != 1 || n != out.size())
    detail::throw_openssl(ErrorKind::Internal, "EVP_DigestFinal_ex");
  return out;
}

std::string Sha256::finish_hex() {
  Digest d = finish();
  return to_hex(std::string_view(reinterpret_cast<const char*>(d.data()), d.size()));
}

Digest sha256(std::string_view bytes) {
  Sha256 h;
  h.update(bytes);
  return h.finish();
}

std::string sha256_hex(std::string_view bytes) {
  Sha256 h;
  h.update(bytes);
  return h.finish_hex();
}

namespace {

// Reads until `limit` bytes were hashed or end of file; returns the count.
uint64_t hash_fd(int fd, uint64_t offset, uint64_t limit, Sha256& h, const std::string& path) {
  std::vector<char> buf(1 << 20);
  uint64_t done = 0;
  while (done < limit) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), limit - done));
    ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(ErrorKind::Io, path + ": read error: " + std::strerror(errno));
    }
    if (n == 0) break;
    h.update(buf.data(), static_cast<size_t>(n));
    done += static_cast<uint64_t>(n);
  }
  return done;
}

}  // namespace

FileDigest sha256_file(const std::string& path) {
  UniqueFd fd = open_read(path);
  Sha256 h;
  FileDigest out;
  out.size = hash_fd(fd.get(), 0, UINT64_MAX, h, path);
  out.sha256 = h.finish_hex();
  return out;
}

FileDigest sha256_file_range(const std::string& path, uint64_t offset, uint64_t size) {
  UniqueFd fd = open_read(path);
  Sha256 h;
  FileDigest out;
  out.size = hash_fd(fd.get(), offset, size, h, path);
  if (out.size != size)
    throw Error(ErrorKind::Invalid, path + ": expected " + std::to_string(size) + " bytes at offset " +
                                        std::to_string(offset) + ", file ends after " +
                                        std::to_string(out.size));
  out.sha256 = h.finish_hex();
  return out;
}

}  // namespace galleon::signing
