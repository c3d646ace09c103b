// signing: small POSIX file helpers shared by signing and bundles (RAII descriptor, capped reads,
// exclusive and atomic writes). Every failure is an Error naming the file.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace galleon::signing {

// Owns a file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  int release() noexcept {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset() noexcept;

 private:
  int fd_ = -1;
};

// open(2) for reading; Error(NotFound) or Error(Io) naming `path`.
UniqueFd open_read(const std::string& path);
// Reads a whole file of at most `cap` bytes; Error(Invalid) when larger.
std::string read_file_capped(const std::string& path, uint64_t cap);
// Creates `path` with O_CREAT|O_EXCL and `mode` (never chmod-ed afterwards), writes, fsyncs.
void write_file_exclusive(const std::string& path, std::string_view bytes, mode_t mode);
// Writes `path`.tmp (mode), fsyncs, renames over `path`, fsyncs the folder.
void write_file_atomic(const std::string& path, std::string_view bytes, mode_t mode);
// write(2) all of `bytes` to fd; Error(Io) naming `path`.
void write_all(int fd, const void* data, size_t size, const std::string& path);
// fsync of the folder holding `path`.
void fsync_parent_dir(const std::string& path);

}  // namespace galleon::signing
