#include "signing/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "runtime/error.h"

namespace galleon::signing {

namespace {

[[noreturn]] void throw_errno(int err, const std::string& path, std::string_view what) {
  ErrorKind kind = err == ENOENT ? ErrorKind::NotFound : ErrorKind::Io;
  throw Error(kind, path + ": " + std::string(what) + ": " + std::strerror(err));
}

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) {
    reset();
    fd_ = o.release();
  }
  return *this;
}

void UniqueFd::reset() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

UniqueFd open_read(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno(errno, path, "cannot open");
  return UniqueFd(fd);
}

std::string read_file_capped(const std::string& path, uint64_t cap) {
  UniqueFd fd = open_read(path);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, path, "read error");
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > cap)
      throw Error(ErrorKind::Invalid, path + ": larger than " + std::to_string(cap) + " bytes");
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

void write_all(int fd, const void* data, size_t size, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, path, "write error");
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
}

namespace {

void write_and_sync(UniqueFd& fd, std::string_view bytes, const std::string& path) {
  write_all(fd.get(), bytes.data(), bytes.size(), path);
  if (::fsync(fd.get()) != 0) throw_errno(errno, path, "fsync");
  int rc = ::close(fd.release());
  if (rc != 0) throw_errno(errno, path, "close");
}

}  // namespace

void write_file_exclusive(const std::string& path, std::string_view bytes, mode_t mode) {
  int raw = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (raw < 0) {
    int err = errno;
    if (err == EEXIST) throw Error(ErrorKind::Usage, path + ": already exists (not overwritten)");
    throw_errno(err, path, "cannot create");
  }
  UniqueFd fd(raw);
  write_and_sync(fd, bytes, path);
}

void fsync_parent_dir(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  int raw = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (raw < 0) throw_errno(errno, dir, "cannot open folder");
  UniqueFd fd(raw);
  if (::fsync(fd.get()) != 0 && errno != EINVAL) throw_errno(errno, dir, "fsync");
}

void write_file_atomic(const std::string& path, std::string_view bytes, mode_t mode) {
  std::string tmp = path + ".tmp";
  int raw = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (raw < 0) throw_errno(errno, tmp, "cannot create");
  UniqueFd fd(raw);
  try {
    write_and_sync(fd, bytes, tmp);
    if (::rename(tmp.c_str(), path.c_str()) != 0) throw_errno(errno, path, "rename");
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_parent_dir(path);
}

}  // namespace galleon::signing
