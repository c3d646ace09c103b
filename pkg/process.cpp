#include "pkg/process.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runtime/error.h"
#include "signing/files.h"

namespace galleon::pkg {
namespace {

using signing::UniqueFd;

struct Pipe {
  UniqueFd read, write;
};

Pipe make_pipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) fail(ErrorKind::Io, std::string("pipe: ") + std::strerror(errno));
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// In the child: wire stdin to /dev/null and stdout/stderr to the pipes, then exec. Never returns.
[[noreturn]] void exec_child(const std::vector<char*>& argv, int out_fd, int err_fd) {
  int null_fd = open("/dev/null", O_RDONLY);
  if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) _exit(126);
  execv(argv[0], argv.data());
  const char* msg = std::strerror(errno);
  (void)!write(2, msg, std::strlen(msg));
  _exit(errno == ENOENT ? 127 : 126);
}

// Reads both pipes until both reach end of file.
void drain(int out_fd, int err_fd, ProcessResult& r) {
  struct pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  int open_count = 2;
  char buf[65536];
  while (open_count > 0) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      fail(ErrorKind::Io, std::string("poll: ") + std::strerror(errno));
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t k = read(fds[i].fd, buf, sizeof buf);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) {
        fds[i].fd = -1;
        --open_count;
      } else {
        (i == 0 ? r.out : r.err).append(buf, size_t(k));
      }
    }
  }
}

int wait_child(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) fail(ErrorKind::Io, std::string("waitpid: ") + std::strerror(errno));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

ProcessResult run_process(const std::vector<std::string>& args) {
  if (args.empty()) fail(ErrorKind::Internal, "run_process: empty command");
  if (access(args[0].c_str(), X_OK) != 0)
    fail(errno == ENOENT ? ErrorKind::NotFound : ErrorKind::Io,
         args[0] + ": cannot execute: " + std::strerror(errno));
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  Pipe out = make_pipe(), err = make_pipe();
  pid_t pid = fork();
  if (pid < 0) fail(ErrorKind::Io, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) exec_child(argv, out.write.get(), err.write.get());
  out.write.reset();
  err.write.reset();
  ProcessResult r;
  try {
    drain(out.read.get(), err.read.get(), r);
  } catch (...) {
    wait_child(pid);
    throw;
  }
  r.exit_code = wait_child(pid);
  return r;
}

}  // namespace galleon::pkg
