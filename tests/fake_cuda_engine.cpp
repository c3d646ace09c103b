// A stand-in CUDA engine for tests on machines without a GPU (build_test): appends its
// arguments as one line to $FAKE_CUDA_LOG, then runs $FAKE_CUDA_ENGINE (the CPU engine) with
// every "cuda" or "cuda:N" argument replaced by "cpu". A bundle's engines are run from an
// in-memory file, so this stand-in must be an executable, not a script.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  const char* log = std::getenv("FAKE_CUDA_LOG");
  const char* engine = std::getenv("FAKE_CUDA_ENGINE");
  if (!log || !engine) {
    std::fprintf(stderr, "fake_cuda_engine: set FAKE_CUDA_LOG and FAKE_CUDA_ENGINE\n");
    return 9;
  }
  std::vector<std::string> args{engine};
  std::string line;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    line += (i > 1 ? " " : "") + a;
    args.push_back(a == "cuda" || a.rfind("cuda:", 0) == 0 ? "cpu" : a);
  }
  if (FILE* f = std::fopen(log, "a")) {
    std::fprintf(f, "%s\n", line.c_str());
    std::fclose(f);
  }
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  execv(engine, cargs.data());
  std::fprintf(stderr, "fake_cuda_engine: %s: %s\n", engine, std::strerror(errno));
  return 9;
}
