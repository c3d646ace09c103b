// pkg: the file-system operations the store performs, behind an interface so that tests can
// inject failures (ENOSPC, EIO) at any step. Every failure is Error(Io) naming the path.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>

namespace galleon::pkg {

class FileSystem {
 public:
  virtual ~FileSystem() = default;
  // open(O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC, mode); returns the descriptor.
  virtual int create_exclusive(const std::string& path, mode_t mode) = 0;
  // Writes all bytes (retrying short writes).
  virtual void write(int fd, const void* data, size_t size, const std::string& path) = 0;
  virtual void fsync(int fd, const std::string& path) = 0;
  // close(2); a failure (deferred write error) is reported.
  virtual void close(int fd, const std::string& path) = 0;
  virtual void rename(const std::string& from, const std::string& to) = 0;
  // Returns false when the file did not exist.
  virtual bool unlink(const std::string& path) = 0;
  // Creates one folder; an existing one is fine.
  virtual void mkdir(const std::string& path, mode_t mode) = 0;
  // Opens the folder and fsyncs it (makes renames and unlinks in it durable).
  virtual void fsync_dir(const std::string& path) = 0;
};

// The real POSIX implementation.
FileSystem& real_fs();

// What the store uses unless told otherwise: real_fs(), or, when the test-only environment
// variable GALLEON_FAULT is set to ERROR:OPERATION:N ("enospc:write:3", "eio:fsync:1"), a
// wrapper around it that fails the N-th call of OPERATION (create_exclusive, write, fsync, close,
// rename, unlink, mkdir, fsync_dir) with ENOSPC or EIO, as a full or failing disk would
// (docs/hardening.md). A malformed value is Error(Usage).
FileSystem& default_fs();

// Owns a descriptor made by FileSystem::create_exclusive: closes it (ignoring errors) unless
// close() was called.
class FsFile {
 public:
  FsFile(FileSystem& fs, std::string path, mode_t mode);
  ~FsFile();
  FsFile(const FsFile&) = delete;
  FsFile& operator=(const FsFile&) = delete;

  void write(const void* data, size_t size) { fs_.write(fd_, data, size, path_); }
  // fsync then close.
  void sync_and_close();
  const std::string& path() const { return path_; }

 private:
  FileSystem& fs_;
  std::string path_;
  int fd_ = -1;
};

}  // namespace galleon::pkg
