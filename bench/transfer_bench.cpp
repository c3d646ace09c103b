// Loopback transfer of one bundle (default 1 GiB): `cp`, BitTorrent (a `galleon seed` process and
// a `galleon fetch --peer` process on 127.0.0.1) and HTTP (`python3 -m http.server` on 127.0.0.1
// and `galleon fetch URL`), in MiB/s. Not run in CI. Usage: transfer_bench [MiB] [work folder].
// Each fetch includes the bundle reader's verification pass over the received file; that pass
// alone is timed too. Page cache warm; the fetched files are written to the same disk.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bundles/manifest.h"
#include "bundles/reader.h"
#include "bundles/writer.h"
#include "bench/bench_bundle.h"
#include "pkg/process.h"
#include "runtime/error.h"
#include "tests/http_server.h"

namespace fsys = std::filesystem;
using namespace galleon;
using Clock = std::chrono::steady_clock;

namespace {

using bench::seconds_since;
using bench::self_dir;

// A background process; its first stdout lines are read, then it is stopped with SIGTERM.
class Background {
 public:
  explicit Background(const std::vector<std::string>& argv) {
    int out[2];
    if (pipe(out) != 0) fail(ErrorKind::Io, "pipe failed");
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      const int null = open("/dev/null", O_WRONLY);
      dup2(null, 2);  // the HTTP server logs every request
      close(null);
      close(out[0]);
      close(out[1]);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    close(out[1]);
    file_ = fdopen(out[0], "r");
  }
  ~Background() {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
    if (file_) fclose(file_);
  }
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;
  std::string line() {
    char buf[4096];
    if (!file_ || !fgets(buf, sizeof buf, file_))
      fail(ErrorKind::Internal, "no output from the server");
    std::string s(buf);
    if (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
  }

 private:
  pid_t pid_ = -1;
  FILE* file_ = nullptr;
};

bool can_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(uint16_t(port));
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

void report(const char* what, double secs, uint64_t bytes, double base) {
  const double mbs = double(bytes) / (1024.0 * 1024.0) / secs;
  std::printf("%-34s %8.3f s %9.1f MiB/s  %5.2fx cp\n", what, secs, mbs, secs / base);
  std::fflush(stdout);
}

double timed(const std::vector<std::string>& argv) {
  const auto t0 = Clock::now();
  auto r = pkg::run_process(argv);
  const double s = seconds_since(t0);
  if (r.exit_code != 0) fail(ErrorKind::Internal, argv[0] + " " + argv[1] + " failed: " + r.err);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const uint64_t mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1024;
    const std::string dir =
        argc > 2 ? argv[2] : (fsys::temp_directory_path() / "galleon-transfer-bench").string();
    fsys::remove_all(dir);
    fsys::create_directories(dir + "/src");
    const std::string bundle = bench::make_bundle(dir + "/src", mib << 20, "transfer benchmark");
    const uint64_t size = fsys::file_size(bundle);
    const std::string galleon = self_dir() + "/galleon";
    std::printf("bundle: %llu bytes\n", static_cast<unsigned long long>(size));
    pkg::run_process({"/bin/cat", bundle});  // warm the page cache

    const double base = timed({"/bin/cp", bundle, dir + "/copy.galleon"});
    report("cp", base, size, base);
    fsys::remove(dir + "/copy.galleon");

    auto t0 = Clock::now();
    bundles::BundleReader(bundle).verify();
    report("verify alone (hash pass)", seconds_since(t0), size, base);

    {
      Background seeder({galleon, "seed", bundle, "--listen", "127.0.0.1:0"});
      const std::string listening = seeder.line();
      const std::string magnet = seeder.line();
      const std::string peer = listening.substr(listening.rfind(' ') + 1);
      const double s = timed({galleon, "fetch", magnet, "--peer", peer, "--listen", "127.0.0.1:0",
                              "--out", dir + "/bt", "--timeout", "60"});
      report("torrent fetch (transfer + verify)", s, size, base);
    }
    {
      const int port = galleon::testing::free_loopback_port();
      Background server({"/usr/bin/python3", "-m", "http.server", std::to_string(port), "--bind",
                         "127.0.0.1", "--directory", dir + "/src"});
      for (int i = 0; i < 100 && !can_connect(port); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/bench-1.galleon";
      const double s = timed({galleon, "fetch", url, "--out", dir + "/http"});
      report("http fetch (transfer + verify)", s, size, base);
    }
    fsys::remove_all(dir);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "transfer_bench: %s\n", e.message().c_str());
    return exit_code(e.kind());
  }
}
