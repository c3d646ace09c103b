// The store through the real CLI: install (file, folder, trust, downgrade, damage), list, info,
// remove, gc, fsck, check, export, and run by name. Bundles are made here with the bundles
// writer (no dependency on `galleon build`), with a fresh GALLEON_HOME per test.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "bundles/canonical_json.h"
#include "bundles/manifest.h"
#include "bundles/writer.h"
#include "pkg/conformance.h"
#include "pkg/fs.h"
#include "pkg/install.h"
#include "pkg/store.h"
#include "runtime/error.h"
#include "pkg/sqlite.h"
#include "signing/keys.h"
#include "signing/sha256.h"
#include "signing/signature.h"
#include "tests/test_support.h"

namespace galleon::testing {
namespace {

namespace fsys = std::filesystem;
using nlohmann::json;

const std::vector<std::pair<std::string, int32_t>> kPrompts{{"Once upon a time", 12},
                                                            {"The cat", 8}};

// Files shared by every test: the model, a key, the conformance transcripts.
struct Fixture {
  TempDir dir;
  std::string gguf = shared_path("models/stories260K/stories260K.gguf");
  std::string engine = bin_path("galleon-engine");
  std::string key_pub;
  std::string conformance;       // the real transcript
  std::string conformance_short; // only the first prompt (another blob)
  std::string conformance_bad;   // a wrong token: replay must mismatch
  std::unique_ptr<signing::PrivateKey> key;
  std::unique_ptr<signing::PrivateKey> other_key;

  Fixture() {
    auto files = signing::generate_key_files(dir.path().string(), "tester");
    key = std::make_unique<signing::PrivateKey>(signing::PrivateKey::load(files.private_path));
    key_pub = files.public_path;
    other_key = std::make_unique<signing::PrivateKey>(signing::PrivateKey::generate());
    pkg::Transcript t = pkg::run_conformance(engine, {gguf, 0, 0}, kPrompts);
    conformance = dir.file("conformance.json");
    write_file(conformance, t.to_json());
    pkg::Transcript one = t;
    one.entries.resize(1);
    conformance_short = dir.file("conformance-short.json");
    write_file(conformance_short, one.to_json());
    pkg::Transcript bad = t;
    bad.entries[0].tokens[0] += 1;
    conformance_bad = dir.file("conformance-bad.json");
    write_file(conformance_bad, bad.to_json());
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

struct BundleSpec {
  std::string name = "tiny";
  std::string version = "1";
  std::string conformance;  // default: the real transcript
  bool sign = true;
  const signing::PrivateKey* key = nullptr;  // default: the trusted test key
  std::string platform;                      // default: this host's
};

struct MadeBundle {
  std::string path;
  std::string id;
  bundles::WriteResult written;
  bundles::Manifest manifest;
};

BundleSpec spec(std::string name, std::string version, std::string conformance = "",
                bool sign = true, const signing::PrivateKey* key = nullptr) {
  BundleSpec s;
  s.name = std::move(name);
  s.version = std::move(version);
  s.conformance = std::move(conformance);
  s.sign = sign;
  s.key = key;
  return s;
}

MadeBundle make_bundle(const std::string& out, const BundleSpec& spec) {
  Fixture& f = fixture();
  std::string conf = spec.conformance.empty() ? f.conformance : spec.conformance;
  bundles::Manifest m;
  m.name = spec.name;
  m.version = spec.version;
  m.description = "a test bundle";
  m.license = "MIT";
  m.members = {bundles::describe_file("bin/galleon-engine", bundles::Role::Engine, f.engine),
               bundles::describe_file("conformance.json", bundles::Role::Conformance, conf),
               bundles::describe_file("model.gguf", bundles::Role::Weights, f.gguf)};
  m.sort_members();
  m.engine.platform = spec.platform.empty() ? bundles::host_platform() : spec.platform;
  m.model = {"llama", 260000, {"f32"}};
  m.recipe_sha256 = std::string(64, 'a');
  m.defaults.temperature = "0";
  m.defaults.seed = 7;
  m.defaults.max_tokens = 16;
  std::vector<signing::Signature> sigs;
  if (spec.sign) sigs.push_back(signing::sign_bundle_id(spec.key ? *spec.key : *f.key, m.id()));
  std::map<std::string, bundles::MemberSource> sources{
      {"bin/galleon-engine", {f.engine, 0}}, {"conformance.json", {conf, 0}},
      {"model.gguf", {f.gguf, 0}}};
  auto w = bundles::write_bundle(out, m, sigs, sources);
  return {out, w.bundle_id, w, m};
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GALLEON_REQUIRE_SHARED(shared_path("models/stories260K/stories260K.gguf"));
    home_ = tmp_.file("home");
    work_ = tmp_.file("work");
    fsys::create_directories(work_);
  }

  CmdResult galleon(std::vector<std::string> args, const std::string& home = "") {
    args.insert(args.begin(), bin_path("galleon"));
    return run_cmd(args, {{"GALLEON_HOME", home.empty() ? home_ : home}});
  }

  void trust(const std::string& home = "") {
    auto r = galleon({"trust", "add", fixture().key_pub}, home);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  std::string bundle_path(const std::string& name) { return work_ + "/" + name; }

  // Every file under the home (not the database files) with its digest, plus every row.
  std::string snapshot() {
    std::string out;
    std::vector<std::string> files;
    if (fsys::exists(home_))
      for (const auto& e : fsys::recursive_directory_iterator(home_)) {
        std::string rel = fsys::relative(e.path(), home_).string();
        if (rel.rfind("store.db", 0) == 0 || rel == "lock") continue;
        files.push_back(rel + (e.is_regular_file() ? " " + signing::sha256_file(e.path()).sha256 : "/"));
      }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) out += f + "\n";
    if (!fsys::exists(home_ + "/store.db")) return out;
    pkg::sql::Db db(home_ + "/store.db");
    const char* queries[] = {
        "SELECT id || ' ' || name || ' ' || version || ' ' || check_result FROM bundles ORDER BY id",
        "SELECT bundle_id || ' ' || path || ' ' || sha256 FROM members ORDER BY 1",
        "SELECT bundle_id || ' ' || key_id FROM signatures ORDER BY 1",
        "SELECT name || ' ' || key_id || ' ' || version FROM accepted ORDER BY 1"};
    for (const char* q : queries) {
      pkg::sql::Stmt s(db, q);
      while (s.step()) out += s.text(0) + "\n";
    }
    return out;
  }

  size_t blob_count(const std::string& home = "") {
    std::string dir = (home.empty() ? home_ : home) + "/blobs/sha256";
    size_t n = 0;
    if (fsys::exists(dir))
      for (const auto& e : fsys::recursive_directory_iterator(dir)) n += e.is_regular_file();
    return n;
  }

  json list_json(const std::string& home = "") {
    auto r = galleon({"list", "--json"}, home);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out);
  }

  TempDir tmp_;
  std::string home_, work_;
};

TEST_F(StoreTest, InstallFileListInfoCheck) {
  trust();
  auto b = make_bundle(bundle_path("tiny-1.galleon"), {});
  auto r = galleon({"install", b.path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("installed tiny 1 " + b.id), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("conformance: identical"), std::string::npos) << r.out;
  json list = list_json();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["id"], b.id);
  EXPECT_EQ(list[0]["name"], "tiny");
  EXPECT_EQ(list[0]["trusted"], true);
  EXPECT_EQ(list[0]["check"], "identical");
  for (const std::string& ref :
       std::vector<std::string>{"tiny", "tiny@1", b.id, b.id.substr(0, 15), b.id.substr(7, 10)}) {
    auto info = galleon({"info", ref, "--json"});
    ASSERT_EQ(info.exit_code, 0) << ref << ": " << info.err;
    json j = json::parse(info.out);
    EXPECT_EQ(j["id"], b.id);
    ASSERT_EQ(j["members"].size(), 3u);
    EXPECT_EQ(j["signatures"][0], fixture().key->key_id());
  }
  EXPECT_EQ(galleon({"info", "nosuch"}).exit_code, 3);
  EXPECT_EQ(galleon({"info", "tiny@2"}).exit_code, 3);
  auto check = galleon({"check", "tiny"});
  EXPECT_EQ(check.exit_code, 0) << check.err;
  EXPECT_NE(check.out.find("identical"), std::string::npos);
  EXPECT_EQ(blob_count(), 3u);
}

TEST_F(StoreTest, InstallTwiceIsANoOp) {
  trust();
  auto b = make_bundle(bundle_path("tiny-1.galleon"), {});
  ASSERT_EQ(galleon({"install", b.path}).exit_code, 0);
  std::string before = snapshot();
  auto r = galleon({"install", b.path});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("already installed"), std::string::npos) << r.out;
  EXPECT_EQ(snapshot(), before);
}

TEST_F(StoreTest, InstallFromFolderSharesBlobs) {
  trust();
  auto a = make_bundle(bundle_path("a-1.galleon"), spec("alpha", "1"));
  auto b = make_bundle(bundle_path("b-1.galleon"), spec("beta", "1", fixture().conformance_short));
  auto r = galleon({"install", work_, "--no-check"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json list = list_json();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["id"], a.id);
  EXPECT_EQ(list[1]["id"], b.id);
  EXPECT_EQ(list[0]["check"], "not-checked");
  std::set<std::string> distinct;
  for (const auto* m : {&a.manifest, &b.manifest})
    for (const auto& mem : m->members) distinct.insert(mem.sha256);
  EXPECT_EQ(distinct.size(), 4u);  // engine and weights shared
  EXPECT_EQ(blob_count(), 4u);
}

TEST_F(StoreTest, UntrustedRefusedUnlessAllowed) {
  auto b = make_bundle(bundle_path("tiny-1.galleon"), {});
  fsys::copy_file(fixture().key_pub, work_ + "/tester.pub");
  ASSERT_EQ(galleon({"list"}).exit_code, 0);  // creates the empty store
  std::string before = snapshot();
  auto r = galleon({"install", b.path});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_NE(r.err.find("tester.pub"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(fixture().key->key_id()), std::string::npos) << r.err;
  EXPECT_EQ(snapshot(), before);
  EXPECT_EQ(blob_count(), 0u);

  auto unsigned_bundle = make_bundle(bundle_path("u-1.galleon"), spec("unsigned", "1", "", false));
  EXPECT_EQ(galleon({"install", unsigned_bundle.path}).exit_code, 5);
  EXPECT_EQ(snapshot(), before);

  auto ok = galleon({"install", b.path, "--allow-untrusted", "--no-check"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.err.find("UNTRUSTED"), std::string::npos) << ok.err;
  json list = list_json();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["trusted"], false);
  // Once its signer is trusted, installing it again marks it trusted.
  trust();
  ASSERT_EQ(galleon({"install", b.path}).exit_code, 0);
  EXPECT_EQ(list_json()[0]["trusted"], true);
}

TEST_F(StoreTest, SignatureByAnUnknownKeyRefused) {
  trust();
  auto b = make_bundle(bundle_path("tiny-1.galleon"), spec("tiny", "1", "", true, fixture().other_key.get()));
  std::string before = snapshot();
  EXPECT_EQ(galleon({"install", b.path}).exit_code, 5);
  EXPECT_EQ(snapshot(), before);
}

TEST_F(StoreTest, DowngradeRefusedUnlessAllowed) {
  trust();
  auto v2 = make_bundle(bundle_path("tiny-2.galleon"), spec("tiny", "2"));
  auto v1 = make_bundle(bundle_path("tiny-1.galleon"), spec("tiny", "1.9"));
  ASSERT_EQ(galleon({"install", v2.path, "--no-check"}).exit_code, 0);
  // Removing the newer version does not lower the floor.
  ASSERT_EQ(galleon({"remove", "tiny"}).exit_code, 0);
  std::string before = snapshot();
  auto r = galleon({"install", v1.path, "--no-check"});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_NE(r.err.find("downgrade"), std::string::npos) << r.err;
  EXPECT_EQ(snapshot(), before);
  auto ok = galleon({"install", v1.path, "--no-check", "--allow-downgrade"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.err.find("downgrade"), std::string::npos) << ok.err;
}

TEST_F(StoreTest, FlippedByteAnywhereRefusedStoreUnchanged) {
  trust();
  auto b = make_bundle(bundle_path("tiny-1.galleon"), {});
  std::string original = read_file(b.path);
  // An unrelated bundle already installed: its blobs must survive every refusal untouched.
  auto other = make_bundle(bundle_path("other.galleon"), spec("other", "1", fixture().conformance_short));
  ASSERT_EQ(galleon({"install", other.path, "--no-check"}).exit_code, 0);
  fsys::remove(other.path);
  std::string before = snapshot();
  std::vector<std::pair<std::string, uint64_t>> spots;
  for (const auto& e : b.written.entries) {
    spots.push_back({e.path + " (first byte)", e.offset});
    spots.push_back({e.path + " (last byte)", e.offset + e.size - 1});
  }
  for (const auto& [what, offset] : spots) {
    std::string damaged = original;
    damaged[offset] = char(damaged[offset] ^ 0x01);
    write_file(b.path, damaged);
    auto r = galleon({"install", b.path});
    EXPECT_TRUE(r.exit_code == 4 || r.exit_code == 5) << what << ": " << r.exit_code << " " << r.err;
    EXPECT_EQ(snapshot(), before) << what;
  }
  EXPECT_TRUE(fsys::is_empty(home_ + "/tmp"));
}

TEST_F(StoreTest, RemoveAndGcLeaveNoBlob) {
  trust();
  auto a = make_bundle(bundle_path("a-1.galleon"), spec("alpha", "1"));
  auto b = make_bundle(bundle_path("b-1.galleon"), spec("beta", "1", fixture().conformance_short));
  ASSERT_EQ(galleon({"install", work_, "--no-check"}).exit_code, 0);
  ASSERT_EQ(galleon({"remove", "beta"}).exit_code, 0);
  EXPECT_EQ(blob_count(), 4u);  // rows first, blobs later
  auto gc = galleon({"gc"});
  ASSERT_EQ(gc.exit_code, 0) << gc.err;
  EXPECT_NE(gc.out.find("freed 1 blobs"), std::string::npos) << gc.out;
  EXPECT_EQ(blob_count(), 3u);
  EXPECT_EQ(galleon({"fsck"}).exit_code, 0);
  ASSERT_EQ(galleon({"remove", a.id}).exit_code, 0);
  ASSERT_EQ(galleon({"gc"}).exit_code, 0);
  EXPECT_EQ(blob_count(), 0u);
  EXPECT_EQ(list_json().size(), 0u);
  EXPECT_EQ(galleon({"remove", "alpha"}).exit_code, 3);
}

TEST_F(StoreTest, FsckFindsDamage) {
  trust();
  auto b = make_bundle(bundle_path("tiny-1.galleon"), {});
  ASSERT_EQ(galleon({"install", b.path, "--no-check"}).exit_code, 0);
  auto clean = galleon({"fsck"});
  EXPECT_EQ(clean.exit_code, 0) << clean.out << clean.err;
  const auto* weights = b.manifest.find_role(bundles::Role::Weights);
  std::string blob = home_ + "/blobs/sha256/" + weights->sha256.substr(0, 2) + "/" +
                     weights->sha256.substr(2);
  fsys::permissions(blob, fsys::perms::owner_write, fsys::perm_options::add);
  std::string bytes = read_file(blob);
  bytes[bytes.size() / 2] ^= 0x40;
  write_file(blob, bytes);
  auto r = galleon({"fsck"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_NE(r.out.find(blob), std::string::npos) << r.out;
  // A missing blob is named with its bundle and member.
  const auto* conf = b.manifest.find_role(bundles::Role::Conformance);
  fsys::remove(home_ + "/blobs/sha256/" + conf->sha256.substr(0, 2) + "/" + conf->sha256.substr(2));
  r = galleon({"fsck"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_NE(r.out.find("conformance.json: blob missing"), std::string::npos) << r.out;
  // A row that disagrees with the stored manifest is damage too.
  {
    pkg::sql::Db db(home_ + "/store.db");
    db.exec("UPDATE members SET role = 'license' WHERE path = 'model.gguf'");
    r = galleon({"fsck"});
    EXPECT_EQ(r.exit_code, 4);
    EXPECT_NE(r.out.find("member rows differ"), std::string::npos) << r.out;
    db.exec("UPDATE members SET role = 'weights' WHERE path = 'model.gguf'");
  }
  // Repair: delete the damaged blob, install the file again, fsck is clean.
  EXPECT_EQ(galleon({"fsck", "--repair"}).exit_code, 4);
  auto again = galleon({"install", b.path, "--no-check"});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  auto after = galleon({"fsck"});
  EXPECT_EQ(after.exit_code, 0) << after.out;
}

TEST_F(StoreTest, ExportIsByteIdenticalAndInstallsElsewhere) {
  trust();
  auto b = make_bundle(bundle_path("tiny-1.galleon"), {});
  ASSERT_EQ(galleon({"install", b.path, "--no-check"}).exit_code, 0);
  std::string usb = tmp_.file("usb");
  auto r = galleon({"export", "tiny", "--to", usb});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_file(usb + "/tiny-1.galleon"), read_file(b.path));
  std::string keyfile = usb + "/" + fixture().key->key_id() + ".pub";
  ASSERT_TRUE(fsys::exists(keyfile));
  json index = json::parse(read_file(usb + "/index.json"));
  ASSERT_EQ(index["bundles"].size(), 1u);
  EXPECT_EQ(index["bundles"][0]["id"], b.id);

  std::string home2 = tmp_.file("home2");
  EXPECT_EQ(galleon({"install", usb}, home2).exit_code, 5);  // the key beside is not trusted
  ASSERT_EQ(galleon({"trust", "add", keyfile}, home2).exit_code, 0);
  auto inst = galleon({"install", usb}, home2);
  ASSERT_EQ(inst.exit_code, 0) << inst.err;
  json list = list_json(home2);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["id"], b.id);
  EXPECT_EQ(list[0]["check"], "identical");
}

TEST_F(StoreTest, ConformanceMismatchStaysInstalledAndIsReported) {
  trust();
  auto b = make_bundle(bundle_path("bad-1.galleon"), spec("bad", "1", fixture().conformance_bad));
  auto r = galleon({"install", b.path});
  EXPECT_EQ(r.exit_code, 9) << r.err;
  EXPECT_NE(r.err.find("MISMATCH"), std::string::npos) << r.err;
  json list = list_json();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["check"], "mismatch");
  auto check = galleon({"check", "bad"});
  EXPECT_EQ(check.exit_code, 9);
  EXPECT_NE(check.err.find("MISMATCH"), std::string::npos) << check.err;
}

json run_json(const CmdResult& r) {
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return json::parse(r.out);
}

TEST_F(StoreTest, RunByNameMatchesRunOnTheGguf) {
  trust();
  auto b = make_bundle(bundle_path("tiny-1.galleon"), {});
  ASSERT_EQ(galleon({"install", b.path, "--no-check"}).exit_code, 0);
  std::vector<std::string> args{"--prompt", "Once upon a time", "--temperature", "0",
                                "--max-tokens", "16", "--json"};
  auto with = [&](const std::string& target) {
    std::vector<std::string> a{"run", target};
    a.insert(a.end(), args.begin(), args.end());
    return run_json(galleon(a));
  };
  json direct = with(fixture().gguf);
  for (const std::string& target : std::vector<std::string>{"tiny", "tiny@1", b.id, b.path}) {
    json j = with(target);
    EXPECT_EQ(j["tokens"], direct["tokens"]) << target;
    EXPECT_EQ(j["logits_sha256"], direct["logits_sha256"]) << target;
  }
  // The recipe defaults (temperature 0, max_tokens 16) apply when not given.
  json defaults = run_json(galleon({"run", "tiny", "--prompt", "Once upon a time", "--json"}));
  EXPECT_EQ(defaults["tokens"], direct["tokens"]);
  EXPECT_EQ(defaults["logits_sha256"], direct["logits_sha256"]);
  EXPECT_EQ(galleon({"run", "nosuch", "--prompt", "x"}).exit_code, 3);
}

TEST_F(StoreTest, RunOfAnUntrustedBundleFileRefused) {
  auto b = make_bundle(bundle_path("tiny-1.galleon"), {});
  auto r = galleon({"run", b.path, "--prompt", "Once", "--json"});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  auto ok = galleon({"run", b.path, "--prompt", "Once", "--json", "--allow-untrusted"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

TEST_F(StoreTest, TmpLeftoversSweptAndInterruptedInstallLeavesNoRows) {
  trust();
  auto b = make_bundle(bundle_path("tiny-1.galleon"), {});
  fsys::create_directories(home_ + "/tmp");
  write_file(home_ + "/tmp/leftover.part", "half a blob");
  ASSERT_EQ(galleon({"install", b.path, "--no-check"}).exit_code, 0);
  EXPECT_TRUE(fsys::is_empty(home_ + "/tmp"));
}


TEST_F(StoreTest, RunRecordReplaysIdentically) {
  trust();
  auto b = make_bundle(bundle_path("tiny-1.galleon"), {});
  ASSERT_EQ(galleon({"install", b.path, "--no-check"}).exit_code, 0);
  std::string prompt_file = work_ + "/prompt.txt";
  write_file(prompt_file, "Once upon a time");
  std::string rec = work_ + "/run.json";
  auto r = galleon({"run", "tiny", "--file", prompt_file, "--temperature", "0.9", "--record", rec});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(r.out.empty());
  json record = json::parse(read_file(rec));
  EXPECT_EQ(record["bundle"], b.id);
  EXPECT_EQ(record["prompt"], "Once upon a time");
  EXPECT_EQ(record["seed"], 7);  // the recipe default
  EXPECT_EQ(record["engine_sha256"], b.manifest.find_role(bundles::Role::Engine)->sha256);
  auto replay = galleon({"replay", rec});
  EXPECT_EQ(replay.exit_code, 0) << replay.err;
  EXPECT_NE(replay.out.find("identical"), std::string::npos) << replay.out;

  record["tokens"][3] = record["tokens"][3].get<int>() + 1;
  write_file(rec, bundles::canonical_dump(record));
  auto bad = galleon({"replay", rec});
  EXPECT_EQ(bad.exit_code, 9);
  EXPECT_NE(bad.err.find("output token 3"), std::string::npos) << bad.err;

  ASSERT_EQ(galleon({"remove", "tiny"}).exit_code, 0);
  EXPECT_EQ(galleon({"replay", rec}).exit_code, 3);
}

// The whole flow with the shipped recipe: build, carry on a "USB stick", trust, install, run,
// export byte-identical.
TEST_F(StoreTest, FullFlowFromTheShippedRecipe) {
  GALLEON_REQUIRE_SHARED(shared_path("models/stories260K/stories260K.bin"));
  std::string usb = tmp_.file("usb");
  fsys::create_directories(usb);
  ASSERT_EQ(galleon({"key", "generate", "maker", "--dir", work_}).exit_code, 0);
  auto built = galleon({"build", std::string(GALLEON_SOURCE_DIR) + "/recipes/stories260k.yaml",
                        "--source-dir", shared_path("models/stories260K"), "--offline", "--key",
                        work_ + "/maker.key", "--out", usb + "/stories260k-1.0.0.galleon"},
                       tmp_.file("build-home"));
  ASSERT_EQ(built.exit_code, 0) << built.err;
  fsys::copy_file(work_ + "/maker.pub", usb + "/maker.pub");
  EXPECT_EQ(galleon({"install", usb}).exit_code, 5);
  ASSERT_EQ(galleon({"trust", "add", usb + "/maker.pub"}).exit_code, 0);
  auto inst = galleon({"install", usb});
  ASSERT_EQ(inst.exit_code, 0) << inst.err;
  EXPECT_NE(inst.out.find("conformance: identical"), std::string::npos) << inst.out;
  // Sampled with the recipe defaults (temperature 0.8, seed 42): by name and from the file alike.
  json by_name = run_json(galleon({"run", "stories260k", "--prompt", "Once upon a time", "--json"}));
  json by_file = run_json(galleon({"run", usb + "/stories260k-1.0.0.galleon", "--prompt",
                                   "Once upon a time", "--json"}));
  EXPECT_EQ(by_name["tokens"], by_file["tokens"]);
  EXPECT_EQ(by_name["logits_sha256"], by_file["logits_sha256"]);
  EXPECT_FALSE(by_name["text"].get<std::string>().empty());
  std::string out = tmp_.file("exported");
  ASSERT_EQ(galleon({"export", "stories260k", "--to", out}).exit_code, 0);
  EXPECT_EQ(read_file(out + "/stories260k-1.0.0.galleon"),
            read_file(usb + "/stories260k-1.0.0.galleon"));
}

TEST_F(StoreTest, ConcurrentInstallsAndGcKeepTheStoreConsistent) {
  trust();
  std::vector<MadeBundle> bundles;
  for (int i = 0; i < 4; ++i)
    bundles.push_back(make_bundle(bundle_path("b" + std::to_string(i) + ".galleon"),
                                  spec("b" + std::to_string(i), "1",
                                       i % 2 ? fixture().conformance_short : "")));
  std::vector<CmdResult> results(bundles.size() + 1);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < bundles.size(); ++i)
    threads.emplace_back([&, i] { results[i] = galleon({"install", bundles[i].path, "--no-check"}); });
  threads.emplace_back([&] { results.back() = galleon({"gc"}); });
  for (auto& t : threads) t.join();
  for (const auto& r : results) EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(list_json().size(), bundles.size());
  auto fsck = galleon({"fsck"});
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out << fsck.err;
  EXPECT_EQ(blob_count(), 4u);
}

// Runs of an installed model go on while other processes install, remove and collect garbage:
// every process exits 0, every run gives the same tokens, and the store stays consistent.
TEST_F(StoreTest, RunsDuringInstallRemoveAndGcAreUnaffected) {
  trust();
  auto tiny = make_bundle(bundle_path("tiny-1.galleon"), {});
  auto other = make_bundle(bundle_path("other-1.galleon"), spec("other", "1", ""));
  ASSERT_EQ(galleon({"install", tiny.path, "--no-check"}).exit_code, 0);
  const std::vector<std::string> run_args{"run", "tiny", "--prompt", "Once upon a time",
                                          "--temperature", "0", "--max-tokens", "8", "--json"};
  const json reference = run_json(galleon(run_args));
  std::vector<std::vector<CmdResult>> results(4);
  std::vector<std::thread> threads;
  for (size_t w = 0; w < 3; ++w)
    threads.emplace_back([&, w] {
      for (int i = 0; i < 3; ++i) results[w].push_back(galleon(run_args));
    });
  threads.emplace_back([&] {
    for (int i = 0; i < 3; ++i) {
      results[3].push_back(galleon({"install", other.path, "--no-check"}));
      results[3].push_back(galleon({"remove", "other"}));
      results[3].push_back(galleon({"gc"}));
    }
  });
  for (auto& t : threads) t.join();
  for (size_t w = 0; w < results.size(); ++w)
    for (const auto& r : results[w]) {
      ASSERT_EQ(r.exit_code, 0) << "worker " << w << ": " << r.err;
      if (w < 3) {
        EXPECT_EQ(json::parse(r.out)["tokens"], reference["tokens"]);
      }
    }
  auto fsck = galleon({"fsck"});
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out << fsck.err;
  json list = list_json();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["name"], "tiny");
}

// A bundle whose engine is for another platform runs with this host's engine only after that
// engine reproduced the transcript (design brief, engine contract).
TEST_F(StoreTest, OtherPlatformRunsWithTheHostEngineAfterItReproduces) {
  trust();
  BundleSpec good = spec("elsewhere", "1");
  good.platform = "plan9-mips";
  auto b = make_bundle(bundle_path("elsewhere-1.galleon"), good);
  auto r = galleon({"install", b.path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("identical with this host's engine"), std::string::npos) << r.out;
  EXPECT_EQ(list_json()[0]["check"], "host-engine-identical");
  json direct = run_json(galleon({"run", fixture().gguf, "--prompt", "The cat", "--temperature",
                                  "0", "--max-tokens", "8", "--json"}));
  json hosted = run_json(galleon({"run", "elsewhere", "--prompt", "The cat", "--temperature", "0",
                                  "--max-tokens", "8", "--json"}));
  EXPECT_EQ(hosted["tokens"], direct["tokens"]);
  EXPECT_EQ(hosted["logits_sha256"], direct["logits_sha256"]);
  // The bundle file itself cannot run here.
  EXPECT_EQ(galleon({"run", b.path, "--prompt", "x"}).exit_code, 8);

  BundleSpec bad = spec("elsewhere-bad", "1", fixture().conformance_bad);
  bad.platform = "plan9-mips";
  auto c = make_bundle(bundle_path("elsewhere-bad-1.galleon"), bad);
  EXPECT_EQ(galleon({"install", c.path}).exit_code, 9);
  auto refused = galleon({"run", "elsewhere-bad", "--prompt", "x"});
  EXPECT_EQ(refused.exit_code, 8);
  EXPECT_NE(refused.err.find("galleon check"), std::string::npos) << refused.err;
  // Without a replay (--no-check) nothing runs either.
  BundleSpec unchecked = spec("elsewhere-unchecked", "1");
  unchecked.platform = "plan9-mips";
  auto d = make_bundle(bundle_path("elsewhere-unchecked-1.galleon"), unchecked);
  ASSERT_EQ(galleon({"install", d.path, "--no-check"}).exit_code, 0);
  EXPECT_EQ(galleon({"run", "elsewhere-unchecked", "--prompt", "x"}).exit_code, 8);
  EXPECT_EQ(galleon({"check", "elsewhere-unchecked"}).exit_code, 0);
  EXPECT_EQ(galleon({"run", "elsewhere-unchecked", "--prompt", "x", "--max-tokens", "2"}).exit_code, 0);
}

TEST_F(StoreTest, SchemaVersion1StoreIsMigrated) {
  fsys::create_directories(home_);
  {
    pkg::sql::Db db(home_ + "/store.db");
    db.exec("CREATE TABLE schema_version(version INTEGER NOT NULL);"
            "INSERT INTO schema_version VALUES (1);"
            "CREATE TABLE bundles(id TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL,"
            " manifest BLOB NOT NULL, trusted INTEGER NOT NULL, check_result TEXT NOT NULL,"
            " check_detail TEXT NOT NULL DEFAULT '');"
            "CREATE TABLE members(bundle_id TEXT NOT NULL, path TEXT NOT NULL, role TEXT NOT NULL,"
            " size INTEGER NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY(bundle_id, path));"
            "CREATE TABLE signatures(bundle_id TEXT NOT NULL, key_id TEXT NOT NULL,"
            " bytes BLOB NOT NULL, PRIMARY KEY(bundle_id, key_id));"
            "CREATE TABLE accepted(name TEXT NOT NULL, key_id TEXT NOT NULL,"
            " version TEXT NOT NULL, PRIMARY KEY(name, key_id));");
  }
  trust();
  auto b = make_bundle(bundle_path("tiny-1.galleon"), {});
  auto r = galleon({"install", b.path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  pkg::sql::Db db(home_ + "/store.db");
  pkg::sql::Stmt v(db, "SELECT max(version) FROM schema_version");
  ASSERT_TRUE(v.step());
  EXPECT_EQ(v.integer(0), pkg::kStoreSchemaVersion);
  v.run();
  // A store from a newer galleon is refused, not damaged.
  db.exec("INSERT INTO schema_version VALUES (99)");
  EXPECT_EQ(galleon({"list"}).exit_code, 8);
}

// Starts `galleon install` and kills it (SIGKILL) after `delay`: whatever the moment, the
// bundle must end up fully installed or absent, and the next install must work.
void install_and_kill(const std::string& home, const std::string& bundle,
                      std::chrono::milliseconds delay) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setenv("GALLEON_HOME", home.c_str(), 1);
    int null_fd = open("/dev/null", O_WRONLY);
    dup2(null_fd, 1);
    dup2(null_fd, 2);
    std::string g = bin_path("galleon");
    execl(g.c_str(), g.c_str(), "install", bundle.c_str(), "--no-check", "--allow-untrusted",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  std::this_thread::sleep_for(delay);
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
}

TEST_F(StoreTest, KilledInstallLeavesTheBundleInstalledOrAbsent) {
  Fixture& f = fixture();
  std::string weights = work_ + "/weights.bin";
  {
    std::string bytes(64u << 20, '\0');
    std::mt19937_64 rng(3);
    for (size_t i = 0; i + 8 <= bytes.size(); i += 8) {
      uint64_t v = rng();
      std::memcpy(&bytes[i], &v, 8);
    }
    write_file(weights, bytes);
  }
  bundles::Manifest m;
  m.name = "big";
  m.version = "1";
  m.description = "a bundle big enough to be interrupted";
  m.license = "MIT";
  m.members = {bundles::describe_file("bin/galleon-engine", bundles::Role::Engine, f.engine),
               bundles::describe_file("model.gguf", bundles::Role::Weights, weights)};
  m.engine.platform = bundles::host_platform();
  m.model = {"llama", 1, {"f32"}};
  m.recipe_sha256 = std::string(64, 'b');
  std::string bundle = work_ + "/big-1.galleon";
  bundles::write_bundle(bundle, m, {},
                        {{"bin/galleon-engine", {f.engine, 0}}, {"model.gguf", {weights, 0}}});
  for (int delay : {1, 10, 30, 60, 100, 200, 400}) {
    std::string home = tmp_.file("home-kill-" + std::to_string(delay));
    install_and_kill(home, bundle, std::chrono::milliseconds(delay));
    json list = list_json(home);
    if (list.empty()) {
      EXPECT_EQ(galleon({"fsck"}, home).exit_code, 0) << delay << " ms";
      auto again = galleon({"install", bundle, "--no-check", "--allow-untrusted"}, home);
      ASSERT_EQ(again.exit_code, 0) << delay << " ms: " << again.err;
      list = list_json(home);
    }
    ASSERT_EQ(list.size(), 1u) << delay << " ms";
    EXPECT_EQ(list[0]["id"], m.id());
    auto fsck = galleon({"fsck"}, home);
    EXPECT_EQ(fsck.exit_code, 0) << delay << " ms: " << fsck.out;
    EXPECT_EQ(blob_count(home), 2u) << delay << " ms";
    EXPECT_TRUE(fsys::is_empty(home + "/tmp")) << delay << " ms";
  }
}

// Fails the nth call of one operation with an I/O error, as a full or failing disk would.
class FailingFs final : public pkg::FileSystem {
 public:
  FailingFs(std::string op, int nth) : op_(std::move(op)), nth_(nth) {}
  bool failed() const { return failed_; }

  int create_exclusive(const std::string& path, mode_t mode) override {
    hit("create_exclusive", path);
    return real().create_exclusive(path, mode);
  }
  void write(int fd, const void* data, size_t size, const std::string& path) override {
    hit("write", path);
    real().write(fd, data, size, path);
  }
  void fsync(int fd, const std::string& path) override {
    hit("fsync", path);
    real().fsync(fd, path);
  }
  void close(int fd, const std::string& path) override {
    hit("close", path);
    real().close(fd, path);
  }
  void rename(const std::string& from, const std::string& to) override {
    hit("rename", to);
    real().rename(from, to);
  }
  bool unlink(const std::string& path) override { return real().unlink(path); }
  void mkdir(const std::string& path, mode_t mode) override {
    hit("mkdir", path);
    real().mkdir(path, mode);
  }
  void fsync_dir(const std::string& path) override {
    hit("fsync_dir", path);
    real().fsync_dir(path);
  }

 private:
  static pkg::FileSystem& real() { return pkg::real_fs(); }
  void hit(const char* op, const std::string& path) {
    if (op_ != op || ++count_ != nth_) return;
    failed_ = true;
    fail(ErrorKind::Io, path + ": injected failure: No space left on device");
  }
  std::string op_;
  int nth_;
  int count_ = 0;
  bool failed_ = false;
};

TEST_F(StoreTest, InjectedIoFailuresLeaveTheStoreUnchanged) {
  trust();
  ASSERT_EQ(galleon({"list"}).exit_code, 0);  // creates the empty store
  auto b = make_bundle(bundle_path("tiny-1.galleon"), spec("tiny", "1"));
  std::string before = snapshot();
  const std::vector<std::pair<std::string, int>> faults{
      {"create_exclusive", 1}, {"write", 1},  {"write", 3},     {"fsync", 1},
      {"fsync", 3},            {"close", 1},  {"close", 2},     {"mkdir", 1},
      {"rename", 1},           {"rename", 3}, {"fsync_dir", 1}, {"fsync_dir", 4}};
  pkg::InstallOptions options;
  options.no_check = true;
  for (const auto& [op, nth] : faults) {
    FailingFs fs(op, nth);
    try {
      pkg::Store store(pkg::Home{home_}, pkg::StoreMode::Write, fs);
      pkg::install_bundle(store, b.path, options, [](const std::string&) {});
      FAIL() << op << " #" << nth << ": install succeeded";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Io) << op << " #" << nth << ": " << e.message();
    }
    EXPECT_TRUE(fs.failed()) << op << " #" << nth;
    EXPECT_EQ(snapshot(), before) << op << " #" << nth;
  }
  // The same install on a healthy disk works.
  auto ok = galleon({"install", b.path, "--no-check"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

}  // namespace
}  // namespace galleon::testing
