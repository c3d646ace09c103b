#include "pkg/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
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

}  // namespace

FileSystem& real_fs() {
  static RealFs fs;
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
