#include "tests/test_support.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "runtime/gguf.h"

namespace galleon::testing {

namespace {
// The folder configured at build time, or the environment's override (test binaries copied to
// another machine, bench/gpu-check.sh).
std::string dir_or_env(const char* env, const char* built_in) {
  const char* e = std::getenv(env);
  return e && *e ? e : built_in;
}
}  // namespace

std::string shared_path(const std::string& relative) {
  return dir_or_env("GALLEON_TEST_SHARED_DIR", GALLEON_SHARED_DIR) + "/" + relative;
}

std::string bin_path(const std::string& name) {
  return dir_or_env("GALLEON_TEST_BIN_DIR", GALLEON_BIN_DIR) + "/" + name;
}

bool under_ci() {
  const char* ci = std::getenv("CI");
  return ci && std::string(ci) == "true";
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "galleon-test-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  // Make read-only store files removable.
  for (auto it = std::filesystem::recursive_directory_iterator(path_, ec);
       it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    std::filesystem::permissions(it->path(), std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::add, ec);
  }
  std::filesystem::remove_all(path_, ec);
}

CmdResult run_cmd(const std::vector<std::string>& argv,
                  const std::map<std::string, std::string>& env, const std::string& input) {
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe(in_pipe) || pipe(out_pipe) || pipe(err_pipe)) throw std::runtime_error("pipe failed");
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]})
      close(fd);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  signal(SIGPIPE, SIG_IGN);
  size_t written = 0;
  if (input.empty()) close(in_pipe[1]), in_pipe[1] = -1;
  CmdResult r;
  struct pollfd fds[3] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0},
                          {in_pipe[1], POLLOUT, 0}};
  int open_outputs = 2;
  while (open_outputs > 0) {
    nfds_t n = in_pipe[1] >= 0 ? 3 : 2;
    if (poll(fds, n, -1) < 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP))) {
        char buf[65536];
        ssize_t k = read(fds[i].fd, buf, sizeof buf);
        if (k <= 0) {
          close(fds[i].fd);
          fds[i].fd = -1;
          --open_outputs;
        } else {
          (i == 0 ? r.out : r.err).append(buf, size_t(k));
        }
      }
    }
    if (in_pipe[1] >= 0 && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t k = write(in_pipe[1], input.data() + written, input.size() - written);
      if (k > 0) written += size_t(k);
      if (k <= 0 || written == input.size()) {
        close(in_pipe[1]);
        in_pipe[1] = -1;
      }
    }
  }
  if (in_pipe[1] >= 0) close(in_pipe[1]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

void rewrite_gguf(const std::string& from, const std::string& to, const std::string& drop,
                  const std::function<void(const std::string& name, std::vector<float>&)>& f32,
                  const std::function<void(GgufWriter&)>& edit) {
  std::unique_ptr<GgufFile> f = GgufFile::open(from);
  GgufWriter w;
  for (const auto& [k, v] : f->metadata())
    if (k != drop) w.set(k, v);
  for (const GgufTensorInfo& t : f->tensors()) {
    if (t.name == drop) continue;
    if (f32 && t.type == GgmlType::F32) {
      std::vector<float> v(size_t(t.n_elements));
      std::memcpy(v.data(), f->tensor_data(t), v.size() * 4);
      f32(t.name, v);
      w.add_tensor(t.name, t.type, t.dims, v.data(), v.size() * 4);
    } else {
      w.add_tensor(t.name, t.type, t.dims, f->tensor_data(t), size_t(t.n_bytes));
    }
  }
  if (edit) edit(w);
  w.write_file(to);
}

}  // namespace galleon::testing
