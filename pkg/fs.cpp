#include "pkg/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "runtime/error.h"

namespace galleon::pkg {
namespace {

[[noreturn]] void fail_errno(const std::string& path, const char* what) {
  int e = errno;
  fail(ErrorKind::Io, path + ": " + what + ": " + std::strerror(e));
}

class RealFs final : public FileSystem {
 public:
  int create_exclusive(const std::string& path, mode_t mode) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) fail_errno(path, "cannot create the file");
    return fd;
  }

  void write(int fd, const void* data, size_t size, const std::string& path) override {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
      ssize_t n = ::write(fd, p, size);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail_errno(path, "cannot write");
      p += n;
      size -= size_t(n);
    }
  }

  void fsync(int fd, const std::string& path) override {
    if (::fsync(fd) != 0) fail_errno(path, "cannot fsync");
  }

  void close(int fd, const std::string& path) override {
    if (::close(fd) != 0 && errno != EINTR) fail_errno(path, "cannot close");
  }

  void rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) fail_errno(to, ("cannot rename " + from).c_str());
  }

  bool unlink(const std::string& path) override {
    if (::unlink(path.c_str()) == 0) return true;
    if (errno == ENOENT) return false;
    fail_errno(path, "cannot remove");
  }

  void mkdir(const std::string& path, mode_t mode) override {
    if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST)
      fail_errno(path, "cannot create the folder");
  }

  void fsync_dir(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) fail_errno(path, "cannot open the folder");
    int rc = ::fsync(fd);
    int e = errno;
    ::close(fd);
    errno = e;
    if (rc != 0) fail_errno(path, "cannot fsync the folder");
  }
};

// The fault selected by GALLEON_FAULT: fail the nth call of `op` with `error`.
struct Fault {
  int error = 0;
  std::string op;
  long nth = 0;
};

Fault parse_fault(const std::string& spec) {
  std::string usage = "GALLEON_FAULT=" + spec + ": expected ERROR:OPERATION:N (ERROR enospc or eio)";
  size_t a = spec.find(':'), b = spec.rfind(':');
  if (a == std::string::npos || a == b) fail(ErrorKind::Usage, usage);
  Fault f;
  std::string error = spec.substr(0, a);
  f.error = error == "enospc" ? ENOSPC : error == "eio" ? EIO : 0;
  f.op = spec.substr(a + 1, b - a - 1);
  f.nth = std::strtol(spec.c_str() + b + 1, nullptr, 10);
  if (f.error == 0 || f.nth < 1) fail(ErrorKind::Usage, usage);
  return f;
}

// Forwards to the real file system, except the selected call, which fails as the disk would.
class FaultFs final : public FileSystem {
 public:
  FaultFs(FileSystem& real, Fault fault) : real_(real), fault_(std::move(fault)) {}

  int create_exclusive(const std::string& path, mode_t mode) override {
    hit("create_exclusive", path, "cannot create the file");
    return real_.create_exclusive(path, mode);
  }
  void write(int fd, const void* data, size_t size, const std::string& path) override {
    hit("write", path, "cannot write");
    real_.write(fd, data, size, path);
  }
  void fsync(int fd, const std::string& path) override {
    hit("fsync", path, "cannot fsync");
    real_.fsync(fd, path);
  }
  void close(int fd, const std::string& path) override {
    if (is_hit("close")) {
      ::close(fd);
      fail_with(path, "cannot close");
    }
    real_.close(fd, path);
  }
  void rename(const std::string& from, const std::string& to) override {
    hit("rename", to, ("cannot rename " + from).c_str());
    real_.rename(from, to);
  }
  bool unlink(const std::string& path) override {
    hit("unlink", path, "cannot remove");
    return real_.unlink(path);
  }
  void mkdir(const std::string& path, mode_t mode) override {
    hit("mkdir", path, "cannot create the folder");
    real_.mkdir(path, mode);
  }
  void fsync_dir(const std::string& path) override {
    hit("fsync_dir", path, "cannot fsync the folder");
    real_.fsync_dir(path);
  }

 private:
  bool is_hit(const char* op) { return fault_.op == op && ++calls_ == fault_.nth; }
  [[noreturn]] void fail_with(const std::string& path, const char* what) {
    errno = fault_.error;
    fail_errno(path, what);
  }
  void hit(const char* op, const std::string& path, const char* what) {
    if (is_hit(op)) fail_with(path, what);
  }

  FileSystem& real_;
  Fault fault_;
  long calls_ = 0;
};

}  // namespace

FileSystem& real_fs() {
  static RealFs fs;
  return fs;
}

FileSystem& default_fs() {
  const char* spec = std::getenv("GALLEON_FAULT");
  if (spec == nullptr || *spec == '\0') return real_fs();
  static FaultFs fs(real_fs(), parse_fault(spec));
  return fs;
}

FsFile::FsFile(FileSystem& fs, std::string path, mode_t mode)
    : fs_(fs), path_(std::move(path)), fd_(fs.create_exclusive(path_, mode)) {}

FsFile::~FsFile() {
  if (fd_ >= 0) ::close(fd_);
}

void FsFile::sync_and_close() {
  fs_.fsync(fd_, path_);
  int fd = fd_;
  fd_ = -1;
  fs_.close(fd, path_);
}

}  // namespace galleon::pkg
