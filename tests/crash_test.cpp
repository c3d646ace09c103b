// Hardening through the real CLI (docs/hardening.md). Crash safety: every crash point of install,
// remove and gc (GALLEON_CRASH_AT, listed by `galleon debug crash-points`) is hit in turn, then the
// store must pass fsck, hold the bundle fully or not at all, and let the operation succeed when
// run again; then kill -9 at seeded random moments during a mix of installs, removes and gcs.
// Faults (GALLEON_FAULT: ENOSPC, EIO), concurrent processes, trust refusals at install, and
// hostile GGUF files given to every model verb.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <sstream>
#include <thread>
#include <tuple>

#include "bundles/manifest.h"
#include "bundles/writer.h"
#include "pkg/crash_point.h"
#include "signing/keys.h"
#include "signing/sha256.h"
#include "signing/signature.h"
#include "tests/test_support.h"

namespace galleon {
namespace {

namespace fsys = std::filesystem;
using nlohmann::json;
using testing::bin_path;
using testing::CmdResult;
using testing::run_cmd;
using testing::TempDir;
using testing::write_file;

constexpr int kKilled = 128 + SIGKILL;

// One unsigned bundle: the host engine and 8 MiB of seeded random "weights" (two new blobs).
struct CrashBundle {
  TempDir dir;
  std::string path = dir.file("crash-1.galleon");
  std::string id;

  CrashBundle() {
    std::string weights = dir.file("weights.bin");
    std::string bytes(8u << 20, '\0');
    std::mt19937_64 rng(7);
    for (size_t i = 0; i + 8 <= bytes.size(); i += 8) {
      uint64_t v = rng();
      std::memcpy(&bytes[i], &v, 8);
    }
    write_file(weights, bytes);
    std::string engine = bin_path("galleon-engine");
    bundles::Manifest m;
    m.name = "crash";
    m.version = "1";
    m.description = "a bundle for the crash tests";
    m.license = "MIT";
    m.members = {bundles::describe_file("bin/galleon-engine", bundles::Role::Engine, engine),
                 bundles::describe_file("model.gguf", bundles::Role::Weights, weights)};
    m.engine.platform = bundles::host_platform();
    m.model = {"llama", 1, {"f32"}};
    m.recipe_sha256 = std::string(64, 'c');
    bundles::write_bundle(path, m, {},
                          {{"bin/galleon-engine", {engine, 0}}, {"model.gguf", {weights, 0}}});
    id = m.id();
  }
};

CrashBundle& bundle() {
  static CrashBundle b;
  return b;
}

CmdResult galleon(const std::string& home, std::vector<std::string> args,
                  const std::string& crash_at = "") {
  args.insert(args.begin(), bin_path("galleon"));
  std::map<std::string, std::string> env{{"GALLEON_HOME", home}};
  if (!crash_at.empty()) env["GALLEON_CRASH_AT"] = crash_at;
  return run_cmd(args, env);
}

std::vector<std::string> install_args() { return {"install", bundle().path, "--allow-untrusted"}; }
std::vector<std::string> remove_args() { return {"remove", bundle().id}; }
std::vector<std::string> gc_args() { return {"gc"}; }
std::vector<std::string> fetch_args() {
  return {"fetch", "file://" + bundle().path, "--install", "--allow-untrusted"};
}

size_t blob_count(const std::string& home) {
  size_t n = 0;
  if (fsys::exists(home + "/blobs"))
    for (const auto& e : fsys::recursive_directory_iterator(home + "/blobs")) n += e.is_regular_file();
  return n;
}

bool installed(const std::string& home) {
  CmdResult r = galleon(home, {"list", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  json list = json::parse(r.out);
  EXPECT_LE(list.size(), 1u);
  return !list.empty() && list[0]["id"] == bundle().id;
}

// fsck clean (it also sweeps tmp/), and the bundle installed with both blobs or absent.
void expect_consistent(const std::string& home, const std::string& what) {
  CmdResult fsck = galleon(home, {"fsck"});
  EXPECT_EQ(fsck.exit_code, 0) << what << ": " << fsck.out << fsck.err;
  EXPECT_TRUE(fsys::is_empty(home + "/tmp")) << what;
  if (installed(home)) {
    EXPECT_EQ(blob_count(home), 2u) << what;
  }
}

std::vector<std::string> listed_points() {
  CmdResult r = galleon(TempDir().path().string(), {"debug", "crash-points"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> out;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(CrashPoints, TheCliListsEveryPoint) {
  EXPECT_EQ(listed_points(), pkg::crash_points());
  EXPECT_GE(pkg::crash_points().size(), 8u);
}

// Brings `home` to the state the operation of `point` starts from; returns that operation.
std::vector<std::string> prepare(const std::string& home, const std::string& point) {
  if (point.rfind("install.", 0) == 0) return install_args();
  if (point.rfind("fetch.", 0) == 0) return fetch_args();
  EXPECT_EQ(galleon(home, install_args()).exit_code, 0);
  if (point.rfind("remove.", 0) == 0) return remove_args();
  EXPECT_EQ(galleon(home, remove_args()).exit_code, 0);
  return gc_args();
}

// After the operation succeeded: installed (install), absent (remove), no blob left (gc).
void expect_done(const std::string& home, const std::string& point, const std::string& what) {
  if (point.rfind("install.", 0) == 0 || point.rfind("fetch.", 0) == 0) {
    EXPECT_TRUE(installed(home)) << what;
  } else {
    EXPECT_FALSE(installed(home)) << what;
  }
  if (point.rfind("gc.", 0) == 0) {
    EXPECT_EQ(blob_count(home), 0u) << what;
  }
}

TEST(CrashPoints, EveryPointLeavesTheStoreConsistentAndTheOperationRepeatable) {
  size_t crashes = 0;
  for (const std::string& point : listed_points()) {
    for (int hit : {1, 2}) {
      std::string what = point + ":" + std::to_string(hit);
      TempDir tmp;
      std::string home = tmp.file("home");
      std::vector<std::string> op = prepare(home, point);
      CmdResult crashed = galleon(home, op, what);
      if (hit == 1) {
        EXPECT_EQ(crashed.exit_code, kKilled) << what << " not reached: " << crashed.err;
      }
      if (crashed.exit_code == kKilled) ++crashes;
      expect_consistent(home, what);
      // A remove killed after its commit is complete: there is nothing left to remove.
      bool removed = point.rfind("remove.", 0) == 0 && !installed(home);
      CmdResult again = removed ? CmdResult{0, "", ""} : galleon(home, op);
      EXPECT_EQ(again.exit_code, 0) << what << ": " << again.err;
      expect_consistent(home, what + " then again");
      expect_done(home, point, what);
    }
  }
  std::cout << "[ crash points ] " << crashes << " crashes at " << pkg::crash_points().size()
            << " points, each followed by fsck and a successful retry\n";
}

// Starts `galleon ARGS` and kills it with SIGKILL after `delay`; true when the kill landed
// before the process finished.
bool run_and_kill(const std::string& home, const std::vector<std::string>& args,
                  std::chrono::microseconds delay) {
  pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    setenv("GALLEON_HOME", home.c_str(), 1);
    int null_fd = open("/dev/null", O_WRONLY);
    dup2(null_fd, 1);
    dup2(null_fd, 2);
    std::vector<char*> argv;
    std::string g = bin_path("galleon");
    argv.push_back(g.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(g.c_str(), argv.data());
    _exit(127);
  }
  std::this_thread::sleep_for(delay);
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

TEST(CrashPoints, KillNineAtSeededRandomMoments) {
  TempDir tmp;
  std::string home = tmp.file("home");
  std::mt19937 rng(20261126);
  std::uniform_int_distribution<int> op_of(0, 2);
  std::uniform_int_distribution<int> delay_us(0, 60000);
  const std::vector<std::vector<std::string>> ops = {install_args(), remove_args(), gc_args()};
  int killed = 0;
  for (int round = 0; round < 32; ++round) {
    int op = op_of(rng);
    int delay = delay_us(rng);
    std::string what = "round " + std::to_string(round) + " op " + ops[op][0] + " after " +
                       std::to_string(delay) + " us";
    killed += run_and_kill(home, ops[op], std::chrono::microseconds(delay));
    expect_consistent(home, what);
  }
  std::cout << "[ kill -9 ] " << killed << " operations killed before they finished (of 32)\n";
  EXPECT_GT(killed, 0);
  ASSERT_EQ(galleon(home, install_args()).exit_code, 0);
  EXPECT_TRUE(installed(home));
  ASSERT_EQ(galleon(home, remove_args()).exit_code, 0);
  ASSERT_EQ(galleon(home, gc_args()).exit_code, 0);
  EXPECT_EQ(blob_count(home), 0u);
}

// ---- faults: ENOSPC and EIO through GALLEON_FAULT (pkg/fs.h default_fs) ----

CmdResult galleon_with_fault(const std::string& home, const std::vector<std::string>& args,
                             const std::string& fault) {
  std::vector<std::string> argv = args;
  argv.insert(argv.begin(), bin_path("galleon"));
  return run_cmd(argv, {{"GALLEON_HOME", home}, {"GALLEON_FAULT", fault}});
}

void expect_io_error(const CmdResult& r, const std::string& fault, const std::string& home) {
  EXPECT_EQ(r.exit_code, 6) << fault << ": " << r.err;
  bool enospc = fault.rfind("enospc", 0) == 0;
  EXPECT_NE(r.err.find(enospc ? "No space left on device" : "Input/output error"), std::string::npos)
      << fault << ": " << r.err;
  EXPECT_NE(r.err.find(home), std::string::npos) << fault << ": the message names no file: " << r.err;
}

TEST(Faults, InstallFailingOnAFullOrBrokenDiskLeavesNothingBehind) {
  const std::vector<std::string> faults{
      "enospc:create_exclusive:1", "enospc:write:1", "enospc:write:3", "eio:write:2",
      "eio:fsync:1",               "eio:fsync:2",    "eio:close:1",    "eio:close:2",
      "enospc:mkdir:1",            "eio:rename:1",   "eio:rename:2",   "eio:fsync_dir:1",
      "eio:fsync_dir:2"};
  for (const std::string& fault : faults) {
    TempDir tmp;
    std::string home = tmp.file("home");
    expect_io_error(galleon_with_fault(home, install_args(), fault), fault, home);
    expect_consistent(home, fault);
    EXPECT_FALSE(installed(home)) << fault;
    EXPECT_EQ(blob_count(home), 0u) << fault;
    CmdResult ok = galleon(home, install_args());
    EXPECT_EQ(ok.exit_code, 0) << fault << ": " << ok.err;
    EXPECT_TRUE(installed(home)) << fault;
  }
}

TEST(Faults, GcFailingToDeleteKeepsTheStoreConsistent) {
  TempDir tmp;
  std::string home = tmp.file("home");
  ASSERT_EQ(galleon(home, install_args()).exit_code, 0);
  ASSERT_EQ(galleon(home, remove_args()).exit_code, 0);
  for (const std::string fault : {"eio:unlink:1", "eio:unlink:2"})
    expect_io_error(galleon_with_fault(home, gc_args(), fault), fault, home);
  expect_consistent(home, "gc with faults");
  ASSERT_EQ(galleon(home, gc_args()).exit_code, 0);
  EXPECT_EQ(blob_count(home), 0u);
}

TEST(Faults, MalformedSelectionIsAUsageError) {
  TempDir tmp;
  CmdResult r = galleon_with_fault(tmp.file("home"), {"list"}, "full:write");
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

// ---- concurrency: several processes on one store ----

TEST(Concurrency, SameBundleInstalledFourTimesAtOnceEndsUpInstalledOnce) {
  TempDir tmp;
  std::string home = tmp.file("home");
  for (int round = 0; round < 3; ++round) {
    std::vector<CmdResult> results(6);
    std::vector<std::thread> threads;
    for (size_t i = 0; i < 4; ++i)
      threads.emplace_back([&, i] { results[i] = galleon(home, install_args()); });
    threads.emplace_back([&] { results[4] = galleon(home, {"list"}); });
    threads.emplace_back([&] { results[5] = galleon(home, gc_args()); });
    for (auto& t : threads) t.join();
    for (const auto& r : results) EXPECT_EQ(r.exit_code, 0) << "round " << round << ": " << r.err;
    EXPECT_TRUE(installed(home));
    expect_consistent(home, "round " + std::to_string(round));
    EXPECT_EQ(blob_count(home), 2u);
    ASSERT_EQ(galleon(home, remove_args()).exit_code, 0);
  }
}

TEST(Concurrency, InstallRemoveGcAndReadersInterleaved) {
  TempDir tmp;
  std::string home = tmp.file("home");
  std::vector<std::thread> threads;
  for (int worker = 0; worker < 4; ++worker)
    threads.emplace_back([&, worker] {
      for (int i = 0; i < 4; ++i) {
        const std::vector<std::vector<std::string>> ops = {install_args(), remove_args(), gc_args(),
                                                           {"list", "--json"}};
        CmdResult r = galleon(home, ops[size_t(worker + i) % ops.size()]);
        // remove may find nothing to remove (exit 3); nothing else may fail.
        EXPECT_TRUE(r.exit_code == 0 || (r.exit_code == 3 && (worker + i) % 4 == 1))
            << "worker " << worker << ": " << r.exit_code << " " << r.err;
      }
    });
  for (auto& t : threads) t.join();
  expect_consistent(home, "after the mix");
}

// ---- trust at install: removed key, unknown signer ----

// The crash bundle signed by `signers` fresh keys; the first one's public key is kept apart
// from the bundle (keys beside a bundle are listed in the refusal, never trusted).
struct SignedCopy {
  TempDir dir;
  TempDir keys;
  std::string path = dir.file("crash-1.galleon");
  std::string pub;
  std::string key_id;

  explicit SignedCopy(int signers) {
    for (int i = 0; i < signers; ++i) {
      const std::string name = std::string("k") + std::to_string(i);  // GCC 12 warns falsely at "k" + ...
      auto files = signing::generate_key_files(keys.path().string(), name);
      auto key = signing::PrivateKey::load(files.private_path);
      bundles::add_signature(i == 0 ? bundle().path : path, signing::sign_bundle_id(key, bundle().id),
                             path);
      if (i == 0) {
        pub = files.public_path;
        key_id = key.key_id();
      }
    }
  }
};

TEST(Trust, RemovedKeyIsRefusedWithTheReason) {
  TempDir tmp;
  std::string home = tmp.file("home");
  SignedCopy b(1);
  ASSERT_EQ(galleon(home, {"trust", "add", b.pub}).exit_code, 0);
  CmdResult ok = galleon(home, {"install", b.path});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  ASSERT_EQ(galleon(home, remove_args()).exit_code, 0);
  ASSERT_EQ(galleon(home, {"trust", "remove", b.key_id}).exit_code, 0);
  CmdResult refused = galleon(home, {"install", b.path});
  EXPECT_EQ(refused.exit_code, 5) << refused.err;
  EXPECT_NE(refused.err.find("removed"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find(b.key_id), std::string::npos) << refused.err;
  EXPECT_FALSE(installed(home));
  EXPECT_EQ(blob_count(home), 2u);  // the blobs of the first install, until gc
}

TEST(Trust, UnknownSignersAreRefusedAndOneTrustedSignerIsEnough) {
  TempDir tmp;
  std::string home = tmp.file("home");
  SignedCopy b(2);
  CmdResult refused = galleon(home, {"install", b.path});
  EXPECT_EQ(refused.exit_code, 5) << refused.err;
  EXPECT_NE(refused.err.find("untrusted"), std::string::npos) << refused.err;
  EXPECT_FALSE(installed(home));
  EXPECT_TRUE(fsys::is_empty(home + "/tmp"));
  ASSERT_EQ(galleon(home, {"trust", "add", b.pub}).exit_code, 0);
  CmdResult ok = galleon(home, {"install", b.path});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_TRUE(installed(home));
}

TEST(Trust, ThresholdTwoOfThreeThroughInstallAndVerify) {
  TempDir tmp;
  std::string home = tmp.file("home");
  SignedCopy b(3);  // signed by k0, k1, k2; only k0 and k1 become trusted
  ASSERT_EQ(galleon(home, {"trust", "add", b.keys.file("k0.pub")}).exit_code, 0);
  ASSERT_EQ(galleon(home, {"trust", "add", b.keys.file("k1.pub")}).exit_code, 0);
  CmdResult three = galleon(home, {"install", b.path, "--threshold", "3"});
  EXPECT_EQ(three.exit_code, 5) << three.err;
  EXPECT_NE(three.err.find("threshold"), std::string::npos) << three.err;
  EXPECT_FALSE(installed(home));
  CmdResult v3 = galleon(home, {"verify", b.path, "--threshold", "3", "--json"});
  EXPECT_EQ(v3.exit_code, 5) << v3.err;
  EXPECT_EQ(json::parse(v3.out)["trusted"], false);
  CmdResult v2 = galleon(home, {"verify", b.path, "--threshold", "2", "--json"});
  EXPECT_EQ(v2.exit_code, 0) << v2.err;
  EXPECT_EQ(json::parse(v2.out)["trusted"], true);
  CmdResult two = galleon(home, {"install", b.path, "--threshold", "2"});
  EXPECT_EQ(two.exit_code, 0) << two.err;
  EXPECT_TRUE(installed(home));
}

TEST(Trust, ValidSignatureOfAnotherBundleIsRefused) {
  TempDir tmp;
  std::string home = tmp.file("home");
  SignedCopy b(1);
  ASSERT_EQ(galleon(home, {"trust", "add", b.pub}).exit_code, 0);
  // The trusted key's genuine signature over another id, spliced in place of this bundle's
  // (same length: Ed25519 is deterministic and ids have one length).
  auto key = signing::PrivateKey::load(b.keys.file("k0.key"));
  const std::string other_id = "sha256:" + std::string(64, 'e');
  std::string genuine = signing::sign_bundle_id(key, bundle().id).to_json();
  std::string forged = signing::sign_bundle_id(key, other_id).to_json();
  ASSERT_EQ(genuine.size(), forged.size());
  std::string bytes = testing::read_file(b.path);
  size_t at = bytes.find(genuine);
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, genuine.size(), forged);
  std::string file = b.dir.file("forged.galleon");
  write_file(file, bytes);
  CmdResult r = galleon(home, {"install", file});
  EXPECT_TRUE(r.exit_code == 4 || r.exit_code == 5) << r.exit_code << " " << r.err;
  EXPECT_NE(r.err.find(other_id), std::string::npos) << r.err;
  EXPECT_FALSE(installed(home));
  EXPECT_TRUE(fsys::is_empty(home + "/tmp"));
  EXPECT_EQ(blob_count(home), 0u);
}

// ---- hostile GGUF files through the model verbs ----

struct HostileGguf {
  std::string what;
  std::string bytes;
  bool must_fail;  // false: random corruption may leave a valid file
};

void put_le(std::string& b, size_t at, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) b[at + i] = char((v >> (8 * i)) & 0xff);
}

std::vector<HostileGguf> hostile_ggufs(const std::string& good) {
  std::vector<HostileGguf> out;
  for (size_t n : {size_t(0), size_t(3), size_t(4), size_t(8), size_t(16), size_t(24), size_t(100),
                   size_t(1000), size_t(5000), size_t(20000), good.size() / 2, good.size() - 1})
    out.push_back({"truncated to " + std::to_string(n), good.substr(0, n), true});
  const std::vector<std::tuple<const char*, size_t, uint64_t, size_t>> fields{
      {"version 0", 4, 0, 4},           {"version 0xffffffff", 4, 0xffffffffu, 4},
      {"n_tensors 2^64-1", 8, ~0ull, 8}, {"n_tensors 2^40", 8, 1ull << 40, 8},
      {"n_kv 2^64-1", 16, ~0ull, 8},     {"n_kv 2^40", 16, 1ull << 40, 8},
      {"n_kv 0", 16, 0, 8},              {"magic", 0, 0x46554746u, 4}};
  for (const auto& [what, at, value, n] : fields) {
    std::string b = good;
    put_le(b, at, value, n);
    out.push_back({what, b, true});
  }
  std::mt19937_64 rng(5);
  for (int i = 0; i < 12; ++i) {
    std::string b = good;
    for (int k = 0; k < 8; ++k) b[rng() % 16384] = char(rng() & 0xff);
    out.push_back({"random corruption " + std::to_string(i), b, false});
  }
  return out;
}

TEST(HostileGguf, EveryModelVerbFailsCleanly) {
  std::string model = testing::shared_path("models/stories260K/stories260K.gguf");
  GALLEON_REQUIRE_SHARED(model);
  TempDir tmp;
  std::string file = tmp.file("hostile.gguf");
  const std::vector<std::vector<std::string>> verbs{
      {"inspect", file},
      {"tokenize", file, "--text", "Once upon a time"},
      {"score", file, "--text", "Once upon a time"},
      {"run", file, "-p", "Once", "-n", "2", "--temperature", "0"}};
  size_t runs = 0;
  const std::vector<HostileGguf> files = hostile_ggufs(testing::read_file(model));
  for (const HostileGguf& h : files) {
    write_file(file, h.bytes);
    for (const auto& verb : verbs) {
      std::vector<std::string> argv = verb;
      argv.insert(argv.begin(), bin_path("galleon"));
      CmdResult r = run_cmd(argv);
      ++runs;
      std::string what = h.what + ", " + verb[0] + ": exit " + std::to_string(r.exit_code) + " " + r.err;
      EXPECT_LT(r.exit_code, 128) << what;  // never a signal
      EXPECT_NE(r.exit_code, 1) << what;    // never an internal error
      if (h.must_fail) {
        EXPECT_TRUE(r.exit_code == 4 || r.exit_code == 8) << what;
      }
    }
    // `galleon build` of a recipe whose gguf source is pinned to exactly these bytes.
    const std::string recipe = tmp.file("hostile.yaml");
    write_file(recipe, "name: hostile\nversion: 1.0.0\ndescription: a hostile gguf\nlicense: MIT\n"
                       "sources:\n  - file: hostile.gguf\n    sha256: " + signing::sha256_hex(h.bytes) +
                           "\n    size: " + std::to_string(h.bytes.size()) +
                           "\nmodel:\n  format: gguf\n  file: hostile.gguf\n"
                           "conformance:\n  - prompt: Once\n    max_tokens: 2\n");
    const std::string out = tmp.file("hostile.galleon");
    CmdResult b = run_cmd({bin_path("galleon"), "build", recipe, "--source-dir", tmp.path().string(),
                           "--offline", "--out", out},
                          {{"GALLEON_HOME", tmp.file("home")}});
    ++runs;
    std::string what = h.what + ", build: exit " + std::to_string(b.exit_code) + " " + b.err;
    EXPECT_LT(b.exit_code, 128) << what;
    EXPECT_NE(b.exit_code, 1) << what;
    if (h.must_fail) {
      EXPECT_NE(b.exit_code, 0) << what;
      EXPECT_FALSE(fsys::exists(out)) << what;
    }
    fsys::remove(out);
  }
  std::cout << "[ hostile gguf ] " << runs << " verb runs on " << files.size() << " hostile files\n";
}

}  // namespace
}  // namespace galleon
