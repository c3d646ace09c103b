// Distribution through the real CLI (docs/distribution.md): a seeder process and a fetcher
// process over BitTorrent on 127.0.0.1 (DHT, LSD, UPnP and NAT-PMP off), deterministic torrents,
// a killed fetch that resumes, a corrupt seeder, and HTTP mirrors on a loopback server. Bundles
// are made here with the bundles writer: the engine plus a seeded random payload.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>

#include <nlohmann/json.hpp>

#include "bundles/manifest.h"
#include "bundles/writer.h"
#include "signing/keys.h"
#include "signing/signature.h"
#include "tests/http_server.h"
#include "tests/test_support.h"

namespace galleon::testing {
namespace {

namespace fsys = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// A process whose stdout is read line by line while it runs (stderr goes to a file).
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
        const std::string& err_file) {
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe failed");
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      int err = open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(out[1], 1);
      dup2(err, 2);
      close(out[0]);
      close(out[1]);
      close(err);
      for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    close(out[1]);
    fd_ = out[0];
  }
  ~Child() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      wait();
    }
    if (fd_ >= 0) close(fd_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // The next line of stdout; nullopt at end of output or when `deadline` passed.
  std::optional<std::string> read_line(Clock::time_point deadline) {
    for (;;) {
      const size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return std::nullopt;
      struct pollfd p = {fd_, POLLIN, 0};
      if (poll(&p, 1, int(left.count())) <= 0) continue;
      char chunk[4096];
      const ssize_t k = read(fd_, chunk, sizeof chunk);
      if (k <= 0) return std::nullopt;
      buf_.append(chunk, size_t(k));
    }
  }
  void signal(int sig) { kill(pid_, sig); }
  // Exit status, or 128 + signal.
  int wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string buf_;
};

std::string random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = rng();
    for (size_t j = 0; j < 8 && i + j < n; ++j) s[i + j] = char((v >> (8 * j)) & 0xff);
  }
  return s;
}

struct Made {
  std::string path;
  std::string id;
};

// A signed bundle NAME-1.galleon in `dir`: this build's engine and `payload_size` random bytes.
Made make_bundle(const std::string& dir, const std::string& name, size_t payload_size,
                 const signing::PrivateKey& key) {
  fsys::create_directories(dir);
  const std::string payload = dir + "/payload.bin";
  write_file(payload, random_bytes(payload_size, 42));
  const std::string engine = bin_path("galleon-engine");
  bundles::Manifest m;
  m.name = name;
  m.version = "1";
  m.description = "a distribution test bundle";
  m.license = "MIT";
  m.members = {bundles::describe_file("bin/galleon-engine", bundles::Role::Engine, engine),
               bundles::describe_file("model.gguf", bundles::Role::Weights, payload)};
  m.sort_members();
  m.engine.platform = bundles::host_platform();
  m.model = {"llama", 1, {"f32"}};
  m.recipe_sha256 = std::string(64, 'a');
  m.defaults.temperature = "0";
  m.defaults.seed = 1;
  m.defaults.max_tokens = 4;
  std::map<std::string, bundles::MemberSource> sources{{"bin/galleon-engine", {engine, 0}},
                                                       {"model.gguf", {payload, 0}}};
  const std::string out = dir + "/" + name + "-1.galleon";
  auto w = bundles::write_bundle(out, m, {signing::sign_bundle_id(key, m.id())}, sources);
  fsys::remove(payload);
  return {out, w.bundle_id};
}

// Flips bytes in the middle of a file, in place (a seeder's copy rotting under it).
void corrupt_middle(const std::string& path) {
  int fd = open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  const off_t at = off_t(fsys::file_size(path) / 2);
  const std::string junk(4096, '\x5a');
  ASSERT_EQ(pwrite(fd, junk.data(), junk.size(), at), ssize_t(junk.size()));
  close(fd);
}

class DistributionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto files = signing::generate_key_files(tmp_.path().string(), "tester");
    key_ = std::make_unique<signing::PrivateKey>(signing::PrivateKey::load(files.private_path));
    pub_ = files.public_path;
    small_ = make_bundle(tmp_.file("src"), "tiny", 1 << 20, *key_);
  }
  void TearDown() override { seeder_.reset(); }

  CmdResult galleon(const std::string& home, std::vector<std::string> args) {
    args.insert(args.begin(), bin_path("galleon"));
    return run_cmd(args, {{"GALLEON_HOME", home}});
  }
  // A new home that trusts the test key.
  std::string trusting_home(const std::string& name) {
    const std::string home = tmp_.file(name);
    CmdResult r = galleon(home, {"trust", "add", pub_});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return home;
  }
  json installed(const std::string& home) {
    CmdResult r = galleon(home, {"list", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out) : json::array();
  }
  // Starts `galleon seed FILES` on 127.0.0.1 and waits for its address and magnet links (two
  // per bundle with --v1: the hybrid's, then the v1-only torrent's).
  void start_seeder(const std::vector<std::string>& refs, std::vector<std::string> extra = {},
                    const std::string& home = "") {
    std::vector<std::string> argv{bin_path("galleon"), "seed"};
    argv.insert(argv.end(), refs.begin(), refs.end());
    argv.insert(argv.end(), {"--listen", "127.0.0.1:0"});
    argv.insert(argv.end(), extra.begin(), extra.end());
    seeder_ =
        std::make_unique<Child>(argv,
                                std::map<std::string, std::string>{
                                    {"GALLEON_HOME", home.empty() ? tmp_.file("seedhome") : home}},
                                tmp_.file("seed.err"));
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    auto line = seeder_->read_line(deadline);
    ASSERT_TRUE(line && line->rfind("listening on 127.0.0.1:", 0) == 0)
        << (line ? *line : "no output") << read_file(tmp_.file("seed.err"));
    peer_ = line->substr(std::string("listening on ").size());
    magnets_.clear();
    const bool v1 = std::find(extra.begin(), extra.end(), "--v1") != extra.end();
    for (size_t i = 0; i < refs.size() * (v1 ? 2 : 1); ++i) {
      auto m = seeder_->read_line(deadline);
      ASSERT_TRUE(m && m->rfind("magnet:?", 0) == 0) << (m ? *m : "no magnet");
      magnets_.push_back(*m);
    }
  }
  std::vector<std::string> fetch_args(const std::string& source) {
    return {"fetch", source, "--peer", peer_, "--listen", "127.0.0.1:0", "--timeout", "15"};
  }

  TempDir tmp_;
  std::unique_ptr<signing::PrivateKey> key_;
  std::string pub_;
  Made small_;
  std::unique_ptr<Child> seeder_;
  std::string peer_;
  std::vector<std::string> magnets_;
};

TEST_F(DistributionTest, MagnetAndPeerInstallTheBundleInAFreshHome) {
  start_seeder({small_.path});
  ASSERT_NE(magnets_[0].find("xt=urn:btih:"), std::string::npos);
  ASSERT_NE(magnets_[0].find("xt=urn:btmh:1220"), std::string::npos);
  const std::string home = trusting_home("fetchhome");
  auto args = fetch_args(magnets_[0]);
  args.push_back("--install");
  CmdResult r = galleon(home, args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("installed tiny 1 " + small_.id), std::string::npos) << r.out;
  json list = installed(home);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["id"], small_.id);
  EXPECT_TRUE(fsys::is_empty(home + "/partial"));  // the store holds it; no second copy
}

TEST_F(DistributionTest, TorrentFileFetchesTheSameBytes) {
  const std::string torrent = tmp_.file("tiny.torrent");
  CmdResult t = galleon(tmp_.file("h0"), {"torrent", small_.path, "--out", torrent});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  start_seeder({small_.path});
  EXPECT_EQ(t.out, magnets_[0] + "\n");
  const std::string out = tmp_.file("got");
  auto args = fetch_args(torrent);
  args.insert(args.end(), {"--out", out, "--json"});
  CmdResult r = galleon(tmp_.file("h1"), args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_file(out + "/tiny-1.galleon"), read_file(small_.path));
  json done = json::parse(r.out.substr(r.out.rfind("{\"")));
  EXPECT_EQ(done["event"], "done");
  EXPECT_EQ(done["id"], small_.id);
  EXPECT_EQ(done["installed"], false);
}

TEST_F(DistributionTest, TorrentFromAnHttpUrlAndAPeerByHostName) {
  const std::string torrent = tmp_.file("tiny.torrent");
  ASSERT_EQ(galleon(tmp_.file("h0"), {"torrent", small_.path, "--out", torrent}).exit_code, 0);
  HttpServer server({{"/t/tiny.torrent", {read_file(torrent)}}});
  start_seeder({small_.path});
  const std::string home = trusting_home("fetchhome");
  const std::string port = peer_.substr(peer_.rfind(':') + 1);
  CmdResult r =
      galleon(home, {"fetch", server.url("/t/tiny.torrent"), "--peer", "localhost:" + port,
                     "--listen", "127.0.0.1:0", "--timeout", "15", "--install"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(installed(home)[0]["id"], small_.id);
}

TEST_F(DistributionTest, AWebSeedAloneDeliversTheBundle) {
  HttpServer server({{"/w/tiny-1.galleon", {read_file(small_.path)}}});
  const std::string torrent = tmp_.file("tiny.torrent");
  CmdResult t = galleon(tmp_.file("h0"), {"torrent", small_.path, "--out", torrent, "--web-seed",
                                          server.url("/w/tiny-1.galleon")});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_NE(t.out.find("&ws="), std::string::npos) << t.out;
  const std::string home = trusting_home("fetchhome");
  CmdResult r =
      galleon(home, {"fetch", torrent, "--listen", "127.0.0.1:0", "--timeout", "15", "--install"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(installed(home)[0]["id"], small_.id);
}

TEST_F(DistributionTest, SameBundleGivesTheSameTorrentBytesAndMagnet) {
  Made again = make_bundle(tmp_.file("elsewhere"), "tiny", 1 << 20, *key_);
  ASSERT_EQ(read_file(again.path), read_file(small_.path));
  CmdResult a = galleon(tmp_.file("h"), {"torrent", small_.path, "--out", tmp_.file("a.torrent")});
  CmdResult b = galleon(tmp_.file("h"), {"torrent", again.path, "--out", tmp_.file("b.torrent")});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(read_file(tmp_.file("a.torrent")), read_file(tmp_.file("b.torrent")));
  const std::string bytes = read_file(tmp_.file("a.torrent"));
  EXPECT_EQ(bytes.find("creation date"), std::string::npos);
  EXPECT_EQ(bytes.find("created by"), std::string::npos);
  // An installed bundle's torrent is the torrent of its byte-identical export.
  const std::string home = trusting_home("store");
  ASSERT_EQ(galleon(home, {"install", small_.path}).exit_code, 0);
  CmdResult c = galleon(home, {"torrent", "tiny", "--out", tmp_.file("c.torrent")});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(c.out, a.out);
  EXPECT_EQ(read_file(tmp_.file("c.torrent")), bytes);
}

TEST_F(DistributionTest, TwoBuildsOfTheShippedRecipeGiveTheSameTorrent) {
  const std::string models = shared_path("models/stories260K");
  GALLEON_REQUIRE_SHARED(models + "/stories260K.bin");
  const std::string recipe = std::string(GALLEON_SOURCE_DIR) + "/recipes/stories260k.yaml";
  std::vector<std::string> magnets, torrents;
  for (const std::string dir : {"b1", "b2"}) {
    fsys::create_directories(tmp_.file(dir));
    const std::string out = tmp_.file(dir) + "/stories260k-1.0.0.galleon";
    CmdResult b = galleon(tmp_.file("h" + dir),
                          {"build", recipe, "--source-dir", models, "--offline", "--out", out});
    ASSERT_EQ(b.exit_code, 0) << b.err;
    CmdResult t = galleon(tmp_.file("h" + dir), {"torrent", out, "--out", out + ".torrent"});
    ASSERT_EQ(t.exit_code, 0) << t.err;
    magnets.push_back(t.out);
    torrents.push_back(read_file(out + ".torrent"));
  }
  EXPECT_EQ(magnets[0], magnets[1]);
  EXPECT_EQ(torrents[0], torrents[1]);
}

TEST_F(DistributionTest, AMagnetWithNoWayToFindPeersIsAUsageError) {
  CmdResult t = galleon(tmp_.file("h"), {"torrent", small_.path});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  std::string magnet = t.out.substr(0, t.out.size() - 1);
  CmdResult r = galleon(tmp_.file("h"), {"fetch", magnet});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  CmdResult notabundle = galleon(tmp_.file("h"), {"torrent", pub_});
  EXPECT_EQ(notabundle.exit_code, 4) << notabundle.err;
}

TEST_F(DistributionTest, SeedsAnInstalledBundleByName) {
  const std::string home = trusting_home("store");
  ASSERT_EQ(galleon(home, {"install", small_.path}).exit_code, 0);
  start_seeder({"tiny"}, {}, home);
  CmdResult t = galleon(home, {"torrent", "tiny"});
  EXPECT_EQ(t.out, magnets_[0] + "\n");
  const std::string other = trusting_home("other");
  auto args = fetch_args(magnets_[0]);
  args.push_back("--install");
  CmdResult r = galleon(other, args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(installed(other)[0]["id"], small_.id);
  seeder_->signal(SIGTERM);
  auto last = seeder_->read_line(Clock::now() + std::chrono::seconds(10));
  ASSERT_TRUE(last);
  EXPECT_EQ(*last, "stopped: uploaded " + std::to_string(fsys::file_size(small_.path)) + " bytes");
  EXPECT_EQ(seeder_->wait(), 0);
  EXPECT_FALSE(fsys::exists(home + "/partial") && !fsys::is_empty(home + "/partial"));
}

TEST_F(DistributionTest, KilledFetchResumesWithoutStartingOver) {
  Made big = make_bundle(tmp_.file("big"), "big", 16 << 20, *key_);
  const uint64_t total = fsys::file_size(big.path);
  start_seeder({big.path}, {"--max-upload-rate", std::to_string(4 << 20)});
  const std::string home = trusting_home("fetchhome");
  std::vector<std::string> argv{bin_path("galleon")};
  for (const auto& a : fetch_args(magnets_[0])) argv.push_back(a);
  argv.push_back("--json");
  {
    Child first(argv, {{"GALLEON_HOME", home}}, tmp_.file("fetch1.err"));
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    uint64_t done = 0;
    while (done < total / 3) {
      auto line = first.read_line(deadline);
      ASSERT_TRUE(line) << "no progress: " << read_file(tmp_.file("fetch1.err"));
      json j = json::parse(*line);
      ASSERT_EQ(j["event"], "progress") << *line;
      done = j["done"].get<uint64_t>();
    }
    ASSERT_LT(done, total) << "the first fetch finished before it could be killed";
    first.signal(SIGKILL);
    EXPECT_EQ(first.wait(), 128 + SIGKILL);
  }
  EXPECT_TRUE(installed(home).empty());
  auto args = fetch_args(magnets_[0]);
  args.insert(args.end(), {"--install", "--json"});
  CmdResult r = galleon(home, args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json done = json::parse(r.out.substr(r.out.rfind("{\"")));
  EXPECT_EQ(done["size"], total);
  RecordProperty("resumed_download_bytes", std::to_string(done["downloaded"].get<uint64_t>()));
  RecordProperty("bundle_bytes", std::to_string(total));
  EXPECT_GT(done["downloaded"].get<uint64_t>(), 0u);
  EXPECT_LT(done["downloaded"].get<uint64_t>(), total * 3 / 4) << r.out.substr(r.out.rfind("{\""));
  EXPECT_EQ(installed(home)[0]["id"], big.id);
}

TEST_F(DistributionTest, CorruptSeederNeverLeadsToAnInstall) {
  const std::string copy = tmp_.file("seedcopy/tiny-1.galleon");
  fsys::create_directories(tmp_.file("seedcopy"));
  fsys::copy_file(small_.path, copy);
  start_seeder({copy});  // checked good at start, then the copy rots
  corrupt_middle(copy);
  const std::string home = trusting_home("fetchhome");
  auto args = fetch_args(magnets_[0]);
  args[args.size() - 1] = "5";  // --timeout 5
  args.push_back("--install");
  CmdResult r = galleon(home, args);
  EXPECT_EQ(r.exit_code, 7) << r.err;
  EXPECT_NE(r.err.find("failed their hash check"), std::string::npos) << r.err;
  EXPECT_TRUE(installed(home).empty());
}

// ---- third-party BitTorrent clients ----
// Debian's aria2 (its own BitTorrent implementation) downloads from galleon and seeds to it;
// Transmission's tools make and read torrents. Both predate BitTorrent v2 support: Transmission
// 3.00 refuses a hybrid torrent's file tree and aria2 1.36 computes another v1 infohash for it,
// so they take the v1-only torrent (`torrent --v1`, `seed --v1`). .ci/deps installs them.

class ThirdPartyClientTest : public DistributionTest {
 protected:
  // The tool's path on PATH; empty when it is not installed.
  static std::string tool(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::string dirs = path ? path : "/usr/bin";
    for (size_t at = 0; at <= dirs.size();) {
      const size_t colon = std::min(dirs.find(':', at), dirs.size());
      const std::string candidate = dirs.substr(at, colon - at) + "/" + name;
      if (access(candidate.c_str(), X_OK) == 0) return candidate;
      at = colon + 1;
    }
    return "";
  }
  // aria2c confined to 127.0.0.1: no DHT, local discovery or peer exchange, no config file.
  static std::vector<std::string> aria2(const std::string& exe, const std::string& dir) {
    return {exe, "--no-conf", "--interface=127.0.0.1", "--disable-ipv6=true",
            "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
            "--enable-peer-exchange=false", "--bt-stop-timeout=60", "--summary-interval=0",
            "--dir=" + dir};
  }
  // An HTTP tracker's answer (BEP 3 with compact peers, BEP 23) naming one peer "ADDR:PORT".
  static std::string tracker_answer(const std::string& peer) {
    const int port = std::stoi(peer.substr(peer.rfind(':') + 1));
    const std::string compact{'\x7f', '\0', '\0', '\x01', char(port >> 8), char(port & 0xff)};
    return "d8:intervali60e5:peers6:" + compact + "e";
  }
  // The value after `key` on the line of `text` that holds it.
  static std::string field(const std::string& text, const std::string& key) {
    const size_t at = text.find(key);
    if (at == std::string::npos) return "";
    return text.substr(at + key.size(), text.find('\n', at) - at - key.size());
  }
};

#define REQUIRE_TOOL(path, name)                                                          \
  do {                                                                                    \
    if ((path).empty()) {                                                                 \
      if (::galleon::testing::under_ci()) FAIL() << (name) << " missing under CI (.ci/deps)"; \
      GTEST_SKIP() << (name) << " is not installed (apt-get install aria2 transmission-cli)"; \
    }                                                                                     \
  } while (0)

TEST_F(ThirdPartyClientTest, TheirToolsReadOurV1TorrentWithOurInfohash) {
  const std::string show = tool("transmission-show"), aria = tool("aria2c");
  REQUIRE_TOOL(show, "transmission-show");
  REQUIRE_TOOL(aria, "aria2c");
  const std::string torrent = tmp_.file("tiny-v1.torrent");
  CmdResult t = galleon(tmp_.file("h"), {"torrent", small_.path, "--v1", "--out", torrent});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_EQ(t.out.find("urn:btmh:"), std::string::npos) << t.out;
  const std::string btih = field(t.out, "urn:btih:").substr(0, 40);
  ASSERT_EQ(btih.size(), 40u) << t.out;
  CmdResult again = galleon(tmp_.file("h"), {"torrent", small_.path, "--v1", "--out", torrent + "2"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, t.out);
  EXPECT_EQ(read_file(torrent + "2"), read_file(torrent));
  CmdResult s = run_cmd({show, torrent});
  ASSERT_EQ(s.exit_code, 0) << s.out << s.err;
  EXPECT_EQ(field(s.out, "Hash: "), btih) << s.out;
  CmdResult a = run_cmd({aria, "--no-conf", "-S", torrent});
  ASSERT_EQ(a.exit_code, 0) << a.out << a.err;
  EXPECT_EQ(field(a.out, "Info Hash: "), btih) << a.out;
}

TEST_F(ThirdPartyClientTest, Aria2DownloadsFromGalleonSeedByV1TorrentAndMagnet) {
  const std::string aria = tool("aria2c");
  REQUIRE_TOOL(aria, "aria2c");
  const std::string torrent = tmp_.file("tiny-v1.torrent");
  CmdResult t = galleon(tmp_.file("h"), {"torrent", small_.path, "--v1", "--out", torrent});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  start_seeder({small_.path}, {"--v1"});
  ASSERT_EQ(magnets_.size(), 2u);
  EXPECT_NE(magnets_[0].find("urn:btmh:1220"), std::string::npos) << "the hybrid comes first";
  EXPECT_EQ(t.out, magnets_[1] + "\n");
  // aria2 needs a tracker to learn of a peer: this one names the seeder.
  HttpServer tracker({{"/announce", {tracker_answer(peer_)}}});
  for (const std::string& source : {torrent, magnets_[1]}) {
    const std::string dir = tmp_.file(source == torrent ? "by-torrent" : "by-magnet");
    std::vector<std::string> argv = aria2(aria, dir);
    argv.insert(argv.end(), {"--seed-time=0", "--bt-tracker=" + tracker.url("/announce"),
                             "--listen-port=" + std::to_string(free_loopback_port()), source});
    CmdResult r = run_cmd(argv);
    ASSERT_EQ(r.exit_code, 0) << source << "\n" << r.out << r.err;
    EXPECT_EQ(read_file(dir + "/tiny-1.galleon"), read_file(small_.path)) << source;
  }
  EXPECT_FALSE(tracker.requests().empty());
}

TEST_F(ThirdPartyClientTest, GalleonFetchesFromAria2SeedingTransmissionsTorrent) {
  const std::string aria = tool("aria2c"), create = tool("transmission-create"),
                    show = tool("transmission-show");
  REQUIRE_TOOL(aria, "aria2c");
  REQUIRE_TOOL(create, "transmission-create");
  REQUIRE_TOOL(show, "transmission-show");
  // Their torrent: v1, Transmission's piece size, a creator and a date; aria2 seeds it.
  const std::string torrent = tmp_.file("theirs.torrent");
  CmdResult c = run_cmd({create, "-o", torrent, small_.path});
  ASSERT_EQ(c.exit_code, 0) << c.out << c.err;
  const std::string btih = field(run_cmd({show, torrent}).out, "Hash: ");
  ASSERT_EQ(btih.size(), 40u);
  const std::string port = std::to_string(free_loopback_port());
  std::vector<std::string> argv = aria2(aria, fsys::path(small_.path).parent_path().string());
  argv.insert(argv.end(), {"--check-integrity=true", "--seed-ratio=0.0", "--listen-port=" + port,
                           torrent});
  Child seeder(argv, {}, tmp_.file("aria2.err"));
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  for (;;) {  // aria2 checks the file, then listens
    auto line = seeder.read_line(deadline);
    ASSERT_TRUE(line) << "aria2 did not start seeding: " << read_file(tmp_.file("aria2.err"));
    if (line->find("listening on TCP port " + port) != std::string::npos) break;
  }
  const std::string home = trusting_home("fetchhome");
  CmdResult r = galleon(home, {"fetch", torrent, "--peer", "127.0.0.1:" + port, "--listen",
                               "127.0.0.1:0", "--timeout", "30", "--install"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(installed(home)[0]["id"], small_.id);
  // A magnet with their infohash alone: the metadata comes from aria2 (BEP 9).
  const std::string out = tmp_.file("by-magnet");
  r = galleon(tmp_.file("h2"), {"fetch", "magnet:?xt=urn:btih:" + btih + "&dn=tiny-1.galleon",
                                "--peer", "127.0.0.1:" + port, "--listen", "127.0.0.1:0",
                                "--timeout", "30", "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_file(out + "/tiny-1.galleon"), read_file(small_.path));
}

// ---- HTTP mirrors ----

class HttpFetchTest : public DistributionTest {};

TEST_F(HttpFetchTest, InstallsFromAServerAndResumesAfterACutConnection) {
  HttpServer server({{"/m/tiny-1.galleon", {read_file(small_.path), true}}});
  const std::string home = trusting_home("home");
  CmdResult r = galleon(home, {"fetch", server.url("/m/tiny-1.galleon"), "--install"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(installed(home)[0]["id"], small_.id);
  auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].find("Range:"), std::string::npos);
  EXPECT_NE(reqs[1].find("Range: bytes=" + std::to_string(fsys::file_size(small_.path) / 2) + "-"),
            std::string::npos)
      << reqs[1];
}

TEST_F(HttpFetchTest, FailingMirrorsFallBackToAGoodOne) {
  Resource broken{"", false, true, 500};
  HttpServer server(
      {{"/good/tiny-1.galleon", {read_file(small_.path)}}, {"/broken/tiny-1.galleon", broken}});
  const std::string home = trusting_home("home");
  CmdResult r = galleon(
      home, {"fetch", server.url("/missing/tiny-1.galleon"), server.url("/broken/tiny-1.galleon"),
             server.url("/good/tiny-1.galleon"), "--install"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("404"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("500"), std::string::npos) << r.err;
  EXPECT_EQ(installed(home)[0]["id"], small_.id);
}

TEST_F(HttpFetchTest, AMirrorServingWrongBytesIsRefused) {
  std::string wrong = read_file(small_.path);
  wrong[wrong.size() / 2] ^= 0x01;
  HttpServer server(
      {{"/bad/tiny-1.galleon", {wrong}}, {"/good/tiny-1.galleon", {read_file(small_.path)}}});
  const std::string home = trusting_home("home");
  CmdResult bad = galleon(home, {"fetch", server.url("/bad/tiny-1.galleon"), "--install"});
  EXPECT_EQ(bad.exit_code, 4) << bad.err;
  EXPECT_TRUE(installed(home).empty());
  CmdResult r = galleon(home, {"fetch", server.url("/bad/tiny-1.galleon"),
                               server.url("/good/tiny-1.galleon"), "--install"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("/bad/tiny-1.galleon: refused"), std::string::npos) << r.err;
  EXPECT_EQ(installed(home)[0]["id"], small_.id);
}

TEST_F(HttpFetchTest, OnlyHttpHttpsAndFileUrls) {
  CmdResult r = galleon(tmp_.file("home"), {"fetch", "ftp://127.0.0.1/tiny-1.galleon"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  CmdResult f =
      galleon(tmp_.file("home"), {"fetch", "file://" + small_.path, "--out", tmp_.file("o")});
  ASSERT_EQ(f.exit_code, 0) << f.err;
  EXPECT_EQ(read_file(tmp_.file("o/tiny-1.galleon")), read_file(small_.path));
}

}  // namespace
}  // namespace galleon::testing
