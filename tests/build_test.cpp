// galleon build / key / trust / sign / verify through the real CLI, each test with its own
// GALLEON_HOME. Test data: ../shared/models/stories260K.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "pkg/conformance.h"
#include "pkg/http.h"
#include "runtime/error.h"
#include "signing/sha256.h"
#include "tests/http_server.h"
#include "tests/test_support.h"

namespace galleon::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const char* kCheckpointSha = "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696";

std::string recipe_path() { return std::string(GALLEON_SOURCE_DIR) + "/recipes/stories260k.yaml"; }
std::string models_dir() { return shared_path("models/stories260K"); }

// One entry of a tar file: its name and where its data lies.
struct TarEntry {
  std::string name;
  size_t offset = 0;
  size_t size = 0;
};

std::vector<TarEntry> tar_entries(const std::string& bytes) {
  std::vector<TarEntry> out;
  size_t pos = 0;
  while (pos + 512 <= bytes.size() && bytes[pos] != '\0') {
    TarEntry e;
    e.name = std::string(bytes.c_str() + pos, strnlen(bytes.c_str() + pos, 100));
    e.size = std::strtoull(bytes.substr(pos + 124, 12).c_str(), nullptr, 8);
    e.offset = pos + 512;
    out.push_back(e);
    pos = e.offset + (e.size + 511) / 512 * 512;
  }
  return out;
}

TarEntry find_entry(const std::string& bytes, const std::string& prefix) {
  for (const TarEntry& e : tar_entries(bytes))
    if (e.name.rfind(prefix, 0) == 0) return e;
  ADD_FAILURE() << "no tar entry " << prefix;
  return {};
}

std::string member_bytes(const std::string& bundle, const std::string& name) {
  std::string bytes = read_file(bundle);
  TarEntry e = find_entry(bytes, name);
  return bytes.substr(e.offset, e.size);
}

class BuildTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GALLEON_REQUIRE_SHARED(models_dir() + "/stories260K.bin");
    ASSERT_TRUE(fs::exists(recipe_path())) << recipe_path();
  }

  std::map<std::string, std::string> env() const {
    return {{"GALLEON_HOME", home_.file("home")},
            {"no_proxy", "127.0.0.1,localhost"},
            {"NO_PROXY", "127.0.0.1,localhost"}};
  }

  CmdResult galleon(std::vector<std::string> args) const {
    args.insert(args.begin(), bin_path("galleon"));
    return run_cmd(args, env());
  }

  // Runs galleon in `dir` under another umask and time zone.
  CmdResult galleon_in(const std::string& dir, const std::string& umask, const std::string& tz,
                       std::vector<std::string> args) const {
    std::vector<std::string> argv{"/bin/sh", "-c", "umask " + umask + " && cd \"$0\" && exec \"$@\"",
                                  dir, bin_path("galleon")};
    argv.insert(argv.end(), args.begin(), args.end());
    auto e = env();
    e["TZ"] = tz;
    return run_cmd(argv, e);
  }

  // NAME.key / NAME.pub in the test folder; returns the key id.
  std::string make_key(const std::string& name) {
    CmdResult r = galleon({"key", "generate", name, "--dir", work_.path().string()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out.substr(0, 16);
  }

  // Builds the shipped recipe from the shared models, offline; returns the bundle path.
  // `extra`: more build options (--cuda-engine, --cpu-only).
  std::string build(const std::string& out_name, const std::vector<std::string>& keys,
                    const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args{"build", recipe_path(), "--source-dir", models_dir(), "--offline",
                                  "--out", work_.file(out_name)};
    for (const auto& k : keys) args.insert(args.end(), {"--key", work_.file(k + ".key")});
    args.insert(args.end(), extra.begin(), extra.end());
    CmdResult r = galleon(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out.rfind("sha256:", 0), 0u) << r.out;
    return work_.file(out_name);
  }

  json verify_json(const std::string& bundle, int expected_exit) const {
    CmdResult r = galleon({"verify", bundle, "--json"});
    EXPECT_EQ(r.exit_code, expected_exit) << r.out << r.err;
    json j = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j;
  }

  TempDir home_, work_;
};

TEST_F(BuildTest, TwoBuildsInOtherFoldersUmasksAndTimeZonesAreIdentical) {
  make_key("alice");
  TempDir a, b;
  std::vector<std::string> args{"build", recipe_path(), "--source-dir", models_dir(), "--offline",
                                "--key", work_.file("alice.key")};
  CmdResult ra = galleon_in(a.path().string(), "022", "UTC", args);
  CmdResult rb = galleon_in(b.path().string(), "077", "Asia/Kolkata", args);
  ASSERT_EQ(ra.exit_code, 0) << ra.err;
  ASSERT_EQ(rb.exit_code, 0) << rb.err;
  EXPECT_EQ(ra.out, rb.out);
  std::string fa = read_file(a.file("stories260k-1.0.0.galleon"));
  std::string fb = read_file(b.file("stories260k-1.0.0.galleon"));
  EXPECT_EQ(fa.size(), fb.size());
  EXPECT_TRUE(fa == fb) << "bundles differ";
  // Manifest, 1 signature, 5 members, and the CUDA engine in a -DGALLEON_CUDA=ON build.
  EXPECT_EQ(tar_entries(fa).size(), fs::exists(bin_path("galleon-engine-cuda")) ? 8u : 7u);
}

TEST_F(BuildTest, AnotherUserBuildsTheSameBytes) {
  if (geteuid() != 0 || !fs::exists("/usr/bin/setpriv")) GTEST_SKIP() << "needs root and setpriv";
  std::string ref = build("ref.galleon", {});
  TempDir other;
  fs::permissions(other.path(), fs::perms::all);
  std::vector<std::string> argv{"/usr/bin/setpriv", "--reuid=65534", "--regid=65534",
                                "--clear-groups", "/bin/sh", "-c",
                                "umask 002 && cd \"$0\" && exec \"$@\"", other.path().string(),
                                bin_path("galleon"), "build", recipe_path(), "--source-dir",
                                models_dir(), "--offline"};
  CmdResult r = run_cmd(argv, {{"GALLEON_HOME", other.file("home")}, {"TZ", "America/New_York"}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(read_file(ref) == read_file(other.file("stories260k-1.0.0.galleon")));
}

TEST_F(BuildTest, GgufRecipeBundlesTheSourceItself) {
  std::string gguf = models_dir() + "/stories260K.gguf";
  GALLEON_REQUIRE_SHARED(gguf);
  signing::FileDigest d = signing::sha256_file(gguf);
  std::string recipe = work_.file("g.yaml");
  write_file(recipe, "name: stories260k-gguf\nversion: 2\ndescription: the shipped GGUF\n"
                     "license: MIT\nsources:\n  - file: stories260K.gguf\n    sha256: " +
                         d.sha256 + "\n    size: " + std::to_string(d.size) +
                         "\nmodel:\n  format: gguf\n  file: stories260K.gguf\n"
                         "defaults:\n  temperature: 0\n  top_p: 1\n  top_k: 0\n  seed: 1\n"
                         "  max_tokens: 16\nconformance:\n  - prompt: Once upon a time\n"
                         "    max_tokens: 8\n");
  CmdResult r = galleon({"build", recipe, "--source-dir", models_dir(), "--offline", "--out",
                         work_.file("g.galleon")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json m = json::parse(member_bytes(work_.file("g.galleon"), "MANIFEST.json"));
  for (const auto& e : m["members"]) {
    if (e["role"] == "weights") {
      EXPECT_EQ(e["sha256"], d.sha256);
    }
  }
  EXPECT_EQ(m["defaults"]["temperature"], "0");
  EXPECT_EQ(json::parse(member_bytes(work_.file("g.galleon"), "conformance.json"))["prompts"].size(),
            1u);
}

TEST_F(BuildTest, ManifestListsTheMembersAndModelFacts) {
  std::string bundle = build("s.galleon", {});
  json m = json::parse(member_bytes(bundle, "MANIFEST.json"));
  std::vector<std::string> paths;
  for (const auto& e : m["members"]) paths.push_back(e["path"]);
  // A CUDA build (-DGALLEON_CUDA=ON) also bundles the galleon-engine-cuda beside galleon.
  std::vector<std::string> want{"LICENSE.txt", "conformance.json", "engine/galleon-engine"};
  if (fs::exists(bin_path("galleon-engine-cuda"))) want.push_back("engine/galleon-engine-cuda");
  want.insert(want.end(), {"model.gguf", "recipe.yaml"});
  EXPECT_EQ(paths, want);
  EXPECT_EQ(m["model"]["architecture"], "llama");
  EXPECT_GT(m["model"]["n_params"].get<uint64_t>(), 200000u);
  EXPECT_EQ(m["name"], "stories260k");
  EXPECT_EQ(member_bytes(bundle, "recipe.yaml"), read_file(recipe_path()));
  EXPECT_EQ(member_bytes(bundle, "engine/galleon-engine"), read_file(bin_path("galleon-engine")));
}

TEST_F(BuildTest, VerifyIsUntrustedUntilTheKeyIsTrusted) {
  std::string id = make_key("alice");
  std::string bundle = build("s.galleon", {"alice"});
  json j = verify_json(bundle, 5);
  EXPECT_EQ(j["valid"], true);
  EXPECT_EQ(j["trusted"], false);
  EXPECT_EQ(j["signers"], json::array({id}));
  EXPECT_EQ(j["name"], "stories260k");
  EXPECT_EQ(j["version"], "1.0.0");
  EXPECT_EQ(j["signatures"][0]["status"], "unknown-key");

  ASSERT_EQ(galleon({"trust", "add", work_.file("alice.pub")}).exit_code, 0);
  j = verify_json(bundle, 0);
  EXPECT_EQ(j["valid"], true);
  EXPECT_EQ(j["trusted"], true);
  EXPECT_EQ(j["id"].get<std::string>().rfind("sha256:", 0), 0u);
  CmdResult list = galleon({"trust", "list", "--json"});
  EXPECT_EQ(json::parse(list.out)[0]["key"], id);

  ASSERT_EQ(galleon({"trust", "remove", id}).exit_code, 0);
  j = verify_json(bundle, 5);
  EXPECT_EQ(j["signatures"][0]["status"], "removed-key");
}

TEST_F(BuildTest, PublicKeyBesideTheBundleIsValidButNeverTrusted) {
  make_key("alice");
  std::string bundle = build("s.galleon", {"alice"});  // alice.pub lies beside it
  json j = verify_json(bundle, 5);
  EXPECT_EQ(j["signatures"][0]["valid"], true);
  EXPECT_EQ(j["trusted"], false);
  CmdResult r = galleon({"verify", bundle});
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_NE(r.err.find("not trusted"), std::string::npos) << r.err;
}

TEST_F(BuildTest, UnsignedBundleIsUntrusted) {
  std::string bundle = build("s.galleon", {});
  json j = verify_json(bundle, 5);
  EXPECT_EQ(j["valid"], true);
  EXPECT_EQ(j["signers"], json::array());
}

TEST_F(BuildTest, FlippedBytesAreRefused) {
  std::string id = make_key("alice");
  std::string bundle = build("s.galleon", {"alice"});
  ASSERT_EQ(galleon({"trust", "add", work_.file("alice.pub")}).exit_code, 0);
  ASSERT_EQ(verify_json(bundle, 0)["trusted"], true);
  const std::string good = read_file(bundle);
  struct Case {
    std::string entry;
    size_t at;  // offset inside the entry's data
    std::string named;
  };
  const std::vector<Case> cases{
      {"model.gguf", 100000, "model.gguf"},
      {"engine/galleon-engine", 4096, "engine/galleon-engine"},
      {"conformance.json", 20, "conformance.json"},
      {"MANIFEST.json", 30, ""},
      {"signatures/", 120, "signatures/" + id + ".sig"},
  };
  for (const Case& c : cases) {
    std::string bad = good;
    TarEntry e = find_entry(bad, c.entry);
    ASSERT_LT(c.at, e.size) << c.entry;
    bad[e.offset + c.at] ^= 0x01;
    std::string path = work_.file("bad.galleon");
    write_file(path, bad);
    CmdResult r = galleon({"verify", path});
    EXPECT_TRUE(r.exit_code == 4 || r.exit_code == 5) << c.entry << ": " << r.exit_code << r.err;
    EXPECT_NE(r.err.find(c.named), std::string::npos) << c.entry << ": " << r.err;
    EXPECT_FALSE(r.err.empty()) << c.entry;
  }
}

TEST_F(BuildTest, SignAddsASignatureAndKeepsTheId) {
  std::string alice = make_key("alice");
  std::string bob = make_key("bob");
  std::string bundle = build("s.galleon", {"alice"});
  std::string id = verify_json(bundle, 5)["id"];
  CmdResult r = galleon({"sign", bundle, "--key", work_.file("bob.key")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, id + "\n");
  ASSERT_EQ(galleon({"trust", "add", work_.file("bob.pub")}).exit_code, 0);
  json j = verify_json(bundle, 0);
  EXPECT_EQ(j["id"], id);
  std::vector<std::string> signers{alice, bob};
  std::sort(signers.begin(), signers.end());
  EXPECT_EQ(j["signers"], json(signers));
  EXPECT_EQ(j["trusted_signers"], json::array({bob}));
}

TEST_F(BuildTest, SourceWithWrongHashIsNotUsed) {
  TempDir bad;
  std::string ckpt = read_file(models_dir() + "/stories260K.bin");
  ckpt[ckpt.size() / 2] ^= 0x40;
  write_file(bad.file("stories260K.bin"), ckpt);
  write_file(bad.file("tok512.bin"), read_file(models_dir() + "/tok512.bin"));
  CmdResult r = galleon({"build", recipe_path(), "--source-dir", bad.path().string(), "--offline",
                         "--out", work_.file("x.galleon")});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("stories260K.bin"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(kCheckpointSha), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(work_.file("x.galleon")));

  // The right bytes under another name in a second folder are found by their hash.
  TempDir good;
  fs::copy_file(models_dir() + "/stories260K.bin", good.file("renamed.bin"));
  r = galleon({"build", recipe_path(), "--source-dir", bad.path().string(), "--source-dir",
               good.path().string(), "--offline", "--out", work_.file("y.galleon")});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("not used: " + bad.file("stories260K.bin")), std::string::npos) << r.err;
  std::string ref = build("ref.galleon", {});
  EXPECT_TRUE(read_file(ref) == read_file(work_.file("y.galleon")));
}

TEST_F(BuildTest, ConformanceTranscriptMatchesRunOnTheWeights) {
  std::string bundle = build("s.galleon", {});
  json t = json::parse(member_bytes(bundle, "conformance.json"));
  EXPECT_EQ(t["format"], "galleon-conformance/1");
  ASSERT_EQ(t["prompts"].size(), 3u);
  EXPECT_EQ(t["prompts"][0]["prompt"], "Once upon a time");
  EXPECT_EQ(t["prompts"][1]["prompt"], "Lily and Tom went to the park");
  EXPECT_EQ(t["prompts"][2]["prompt"], "The little dog");
  std::string gguf = work_.file("model.gguf");
  write_file(gguf, member_bytes(bundle, "model.gguf"));
  CmdResult r = galleon({"run", gguf, "--prompt", "Once upon a time", "--temperature", "0",
                         "--max-tokens", "32", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json run = json::parse(r.out);
  EXPECT_EQ(run["tokens"], t["prompts"][0]["tokens"]);
  EXPECT_EQ(run["logits_sha256"], t["prompts"][0]["logits_sha256"]);
  EXPECT_FALSE(run["tokens"].empty());
}

// The shipped recipe with the checkpoint's URLs replaced.
std::string recipe_with_urls(const std::vector<std::string>& urls) {
  std::string text = read_file(recipe_path());
  const std::string old_url =
      "      - https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/stories260K.bin\n";
  size_t at = text.find(old_url);
  if (at == std::string::npos) return "";
  std::string lines;
  for (const auto& u : urls) lines += "      - " + u + "\n";
  return text.replace(at, old_url.size(), lines);
}

TEST_F(BuildTest, DownloadsAMissingSourceAndRefusesWrongBytes) {
  std::string ckpt = read_file(models_dir() + "/stories260K.bin");
  std::string wrong = ckpt;
  wrong[1000] ^= 0x01;
  HttpServer server({{"/good/stories260K.bin", {ckpt}}, {"/bad/stories260K.bin", {wrong}}});
  TempDir src;  // only the tokenizer is local
  fs::copy_file(models_dir() + "/tok512.bin", src.file("tok512.bin"));

  // A 404 mirror first, then a good one.
  std::string recipe = work_.file("r.yaml");
  std::string text = recipe_with_urls({server.url("/missing"), server.url("/good/stories260K.bin")});
  ASSERT_FALSE(text.empty());
  write_file(recipe, text);
  CmdResult r = galleon({"build", recipe, "--source-dir", src.path().string(), "--out",
                         work_.file("d.galleon")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("HTTP 404"), std::string::npos) << r.err;
  json m = json::parse(member_bytes(work_.file("d.galleon"), "conformance.json"));
  EXPECT_EQ(m["prompts"].size(), 3u);

  // --offline never downloads.
  r = galleon({"build", recipe, "--source-dir", src.path().string(), "--offline", "--out",
               work_.file("o.galleon")});
  EXPECT_EQ(r.exit_code, 3) << r.err;

  // A URL serving other bytes is refused, naming the source and both hashes.
  write_file(recipe, recipe_with_urls({server.url("/bad/stories260K.bin")}));
  r = galleon({"build", recipe, "--source-dir", src.path().string(), "--out",
               work_.file("w.galleon")});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_NE(r.err.find("stories260K.bin"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(kCheckpointSha), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(work_.file("w.galleon")));
}

TEST_F(BuildTest, ResumesAnInterruptedDownloadWithARangeRequest) {
  std::string ckpt = read_file(models_dir() + "/stories260K.bin");
  HttpServer server({{"/flaky/stories260K.bin", {ckpt, true}}});
  TempDir src;
  fs::copy_file(models_dir() + "/tok512.bin", src.file("tok512.bin"));
  std::string recipe = work_.file("r.yaml");
  write_file(recipe, recipe_with_urls({server.url("/flaky/stories260K.bin")}));
  CmdResult r = galleon({"build", recipe, "--source-dir", src.path().string(), "--out",
                         work_.file("d.galleon")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> reqs = server.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].find("Range:"), std::string::npos);
  EXPECT_NE(reqs[1].find("Range: bytes=" + std::to_string(ckpt.size() / 2) + "-"),
            std::string::npos)
      << reqs[1];
}

TEST_F(BuildTest, RestartsAnInterruptedDownloadWhenTheServerIgnoresRanges) {
  std::string ckpt = read_file(models_dir() + "/stories260K.bin");
  HttpServer server({{"/flaky/stories260K.bin", {ckpt, true, false}}});
  TempDir src;
  fs::copy_file(models_dir() + "/tok512.bin", src.file("tok512.bin"));
  std::string recipe = work_.file("r.yaml");
  write_file(recipe, recipe_with_urls({server.url("/flaky/stories260K.bin")}));
  CmdResult r = galleon({"build", recipe, "--source-dir", src.path().string(), "--out",
                         work_.file("d.galleon")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GE(server.requests().size(), 2u);
}

TEST_F(BuildTest, ServerErrorsAreRetriedThenReportedAsNetworkFailures) {
  HttpServer server({{"/down/stories260K.bin", {"", false, true, 503}}});
  TempDir src;
  fs::copy_file(models_dir() + "/tok512.bin", src.file("tok512.bin"));
  std::string recipe = work_.file("r.yaml");
  write_file(recipe, recipe_with_urls({server.url("/down/stories260K.bin")}));
  CmdResult r = galleon({"build", recipe, "--source-dir", src.path().string(), "--out",
                         work_.file("d.galleon")});
  EXPECT_EQ(r.exit_code, 7) << r.err;
  EXPECT_NE(r.err.find("503"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(server.url("/down/stories260K.bin")), std::string::npos) << r.err;
  EXPECT_EQ(server.requests().size(), 3u);
}

TEST_F(BuildTest, RefusesADownloadLargerThanThePin) {
  std::string big = read_file(models_dir() + "/stories260K.bin") + "more bytes";
  HttpServer server({{"/big/stories260K.bin", {big}}});
  TempDir src;
  fs::copy_file(models_dir() + "/tok512.bin", src.file("tok512.bin"));
  std::string recipe = work_.file("r.yaml");
  write_file(recipe, recipe_with_urls({server.url("/big/stories260K.bin")}));
  CmdResult r = galleon({"build", recipe, "--source-dir", src.path().string(), "--out",
                         work_.file("d.galleon")});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_NE(r.err.find("pinned size"), std::string::npos) << r.err;
}

TEST_F(BuildTest, FindsASourceInTheStoreBlobCache) {
  std::string blob_dir = home_.file("home") + "/blobs/sha256/" + std::string(kCheckpointSha, 2);
  fs::create_directories(blob_dir);
  fs::copy_file(models_dir() + "/stories260K.bin", blob_dir + "/" + std::string(kCheckpointSha + 2));
  TempDir src;
  fs::copy_file(models_dir() + "/tok512.bin", src.file("tok512.bin"));
  CmdResult r = galleon({"build", recipe_path(), "--source-dir", src.path().string(), "--offline",
                         "--out", work_.file("c.galleon")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("store"), std::string::npos) << r.err;
}

TEST_F(BuildTest, KeyGenerateWritesAPrivateKeyOfMode0600) {
  make_key("carol");
  auto perms = fs::status(work_.file("carol.key")).permissions();
  EXPECT_EQ(perms & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_EQ(read_file(work_.file("carol.pub")).rfind("galleon-ed25519 ", 0), 0u);
  CmdResult again = galleon({"key", "generate", "carol", "--dir", work_.path().string()});
  EXPECT_NE(again.exit_code, 0);  // never overwrites
}

TEST(Download, FileUrlsAreCopiedAndCapped) {
  TempDir dir;
  write_file(dir.file("src.bin"), std::string(5000, 'x'));
  pkg::DownloadOptions o;
  o.max_size = 5000;
  pkg::download("file://" + dir.file("src.bin"), dir.file("a.bin"), o);
  EXPECT_EQ(read_file(dir.file("a.bin")), std::string(5000, 'x'));
  o.max_size = 4000;
  try {
    pkg::download("file://" + dir.file("src.bin"), dir.file("b.bin"), o);
    ADD_FAILURE() << "no error for a file over the cap";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Invalid) << e.message();
  }
  try {
    pkg::download("ftp://example.org/x", dir.file("c.bin"), o);
    ADD_FAILURE() << "no error for ftp";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage) << e.message();
  }
}

TEST(Download, ResumesAPartialFile) {
  TempDir dir;
  std::string body;
  for (int i = 0; i < 3000; ++i) body += char('a' + i % 26);
  write_file(dir.file("src.bin"), body);
  write_file(dir.file("part.bin"), body.substr(0, 1234));
  pkg::DownloadOptions o;
  o.max_size = body.size();
  pkg::download("file://" + dir.file("src.bin"), dir.file("part.bin"), o);
  EXPECT_TRUE(read_file(dir.file("part.bin")) == body);
}

TEST(Conformance, TranscriptRoundTripsAndIsStrict) {
  pkg::Transcript t;
  t.entries.push_back({"Once upon a time", 32, {1, 2, 3}, std::string(64, 'a')});
  std::string bytes = t.to_json();
  EXPECT_EQ(bytes,
            "{\"format\":\"galleon-conformance/1\",\"prompts\":[{\"logits_sha256\":\"" +
                std::string(64, 'a') +
                "\",\"max_tokens\":32,\"prompt\":\"Once upon a time\",\"tokens\":[1,2,3]}]}");
  pkg::Transcript back = pkg::Transcript::parse(bytes, "t");
  ASSERT_EQ(back.entries.size(), 1u);
  EXPECT_EQ(back.entries[0].tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_THROW(pkg::Transcript::parse(bytes + " ", "t"), Error);
  std::string extra = bytes;
  extra.replace(extra.find("\"tokens\""), 8, "\"zokens\"");
  EXPECT_THROW(pkg::Transcript::parse(extra, "t"), Error);
}

TEST_F(BuildTest, ReplayInPlaceInsideTheBundleIsIdentical) {
  std::string bundle = build("s.galleon", {});
  std::string bytes = read_file(bundle);
  TarEntry weights = find_entry(bytes, "model.gguf");
  EXPECT_EQ(weights.offset % 512, 0u);
  pkg::Transcript t = pkg::Transcript::parse(member_bytes(bundle, "conformance.json"), "c");
  pkg::ModelLocation at{bundle, weights.offset, weights.size};
  pkg::ReplayResult r = pkg::replay(bin_path("galleon-engine"), at, t);
  EXPECT_TRUE(r.identical) << r.detail;
  t.entries[1].tokens[3] += 1;
  r = pkg::replay(bin_path("galleon-engine"), at, t);
  EXPECT_FALSE(r.identical);
  EXPECT_NE(r.detail.find("prompt 1"), std::string::npos) << r.detail;
  EXPECT_NE(r.detail.find("token 3"), std::string::npos) << r.detail;
}

TEST_F(BuildTest, CudaEngineIsASecondMemberThatRunAndCheckUseOnCuda) {
  // The CUDA engine on the host runtime (tests/CMakeLists.txt): session.cu's kernels on the CPU,
  // so "--device cuda" works only where the CUDA member runs (the CPU engine refuses it, exit 8).
  const std::string engine = bin_path("galleon-engine-cuda-host");
  make_key("alice");
  ASSERT_EQ(galleon({"trust", "add", work_.file("alice.pub")}).exit_code, 0);
  std::string bundle = build("s.galleon", {"alice"}, {"--cuda-engine", engine});
  EXPECT_EQ(member_bytes(bundle, "engine/galleon-engine-cuda"), read_file(engine));
  json m = json::parse(member_bytes(bundle, "MANIFEST.json"));
  int cuda_members = 0;
  for (const auto& e : m["members"]) cuda_members += e["role"] == "engine-cuda";
  EXPECT_EQ(cuda_members, 1) << m.dump();
  ASSERT_EQ(galleon({"install", bundle}).exit_code, 0);

  const std::vector<std::string> run{"run", "stories260k", "-p", "Once upon a time",
                                     "--temperature", "0", "--max-tokens", "12", "--json"};
  CmdResult cpu = galleon(run);
  ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
  EXPECT_EQ(json::parse(cpu.out)["device"], "cpu");
  std::vector<std::string> on_gpu = run;
  on_gpu.insert(on_gpu.end(), {"--device", "cuda:0"});
  CmdResult gpu = galleon(on_gpu);
  ASSERT_EQ(gpu.exit_code, 0) << gpu.err;
  EXPECT_EQ(json::parse(gpu.out)["device"], "cuda:0");
  EXPECT_EQ(json::parse(gpu.out)["logits_sha256"], json::parse(cpu.out)["logits_sha256"]);
  on_gpu.back() = "cuda:1";
  CmdResult second = galleon(on_gpu);
  EXPECT_EQ(second.exit_code, 8);
  EXPECT_NE(second.err.find("no GPU cuda:1"), std::string::npos) << second.err;
  on_gpu.back() = "cuda:0";

  // The conformance transcript (made by the CPU engine at build time) replayed on session.cu.
  CmdResult check = galleon({"check", "stories260k", "--device", "cuda"});
  EXPECT_EQ(check.exit_code, 0) << check.err;
  EXPECT_NE(check.out.find("identical: on cuda: all 3 prompts identical"), std::string::npos)
      << check.out;
  EXPECT_EQ(galleon({"check", "stories260k", "--device", "gpu"}).exit_code, 2);
  EXPECT_EQ(galleon({"check", "stories260k", "--device", "cuda:x"}).exit_code, 2);

  // The bundle file runs its CUDA engine too.
  on_gpu[1] = bundle;
  gpu = galleon(on_gpu);
  ASSERT_EQ(gpu.exit_code, 0) << gpu.err;
  EXPECT_EQ(json::parse(gpu.out)["device"], "cuda:0");
  EXPECT_EQ(json::parse(gpu.out)["logits_sha256"], json::parse(cpu.out)["logits_sha256"]);
}

TEST_F(BuildTest, BundleWithoutACudaEngineSaysSoOnCuda) {
  make_key("alice");
  ASSERT_EQ(galleon({"trust", "add", work_.file("alice.pub")}).exit_code, 0);
  std::string bundle = build("s.galleon", {"alice"}, {"--cpu-only"});
  for (const TarEntry& e : tar_entries(read_file(bundle)))
    EXPECT_NE(e.name, "engine/galleon-engine-cuda");
  ASSERT_EQ(galleon({"install", bundle}).exit_code, 0);
  CmdResult r = galleon({"run", "stories260k", "-p", "Once", "--device", "cuda"});
  EXPECT_EQ(r.exit_code, 8) << r.err;
  EXPECT_NE(r.err.find("the bundle has no CUDA engine"), std::string::npos) << r.err;
  r = galleon({"check", "stories260k", "--device", "cuda"});
  EXPECT_EQ(r.exit_code, 8) << r.out << r.err;
  EXPECT_NE(r.err.find("no CUDA engine"), std::string::npos) << r.err;
  EXPECT_EQ(galleon({"check", "stories260k"}).exit_code, 0);
}

}  // namespace
}  // namespace galleon::testing
