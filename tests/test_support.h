// Shared helpers for the tests: test data location, temporary folders, running the real CLI.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace galleon {
class GgufWriter;
}

namespace galleon::testing {

// Path of a file under GALLEON_SHARED_DIR (../shared by default; the environment variable
// GALLEON_TEST_SHARED_DIR overrides it at run time).
std::string shared_path(const std::string& relative);
// Path of a built executable (build/bin/NAME; GALLEON_TEST_BIN_DIR overrides the folder).
std::string bin_path(const std::string& name);
bool under_ci();

// Skips the test (fails it under CI=true) when a shared test file is absent.
#define GALLEON_REQUIRE_SHARED(path)                                                   \
  do {                                                                                  \
    if (!std::filesystem::exists(path)) {                                              \
      if (::galleon::testing::under_ci()) FAIL() << "test data missing under CI: " << (path); \
      GTEST_SKIP() << "test data missing (set GALLEON_SHARED_DIR): " << (path);        \
    }                                                                                   \
  } while (0)

// A fresh folder removed at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

struct CmdResult {
  int exit_code = -1;  // exit status; 128+signal when killed by a signal
  std::string out;
  std::string err;
};

// Runs argv (argv[0] a path) with extra environment variables, feeding `input` on stdin.
CmdResult run_cmd(const std::vector<std::string>& argv,
                  const std::map<std::string, std::string>& env = {},
                  const std::string& input = "");

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);

// GGUF file `from` written again as `to`: without the metadata key or tensor named `drop`
// (empty: none), each F32 tensor's values through `f32` (if set; it may change them), then
// `edit` (if set) on the writer.
void rewrite_gguf(const std::string& from, const std::string& to, const std::string& drop,
                  const std::function<void(const std::string& name, std::vector<float>&)>& f32,
                  const std::function<void(GgufWriter&)>& edit);

}  // namespace galleon::testing
