// Tests of the bundles layer: canonical JSON, recipes, manifests, the deterministic writer and the
// verifying reader (hostile archives crafted with libarchive and by byte surgery).
#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>

#include "bundles/canonical_json.h"
#include "bundles/fields.h"
#include "bundles/manifest.h"
#include "bundles/member_path.h"
#include "bundles/reader.h"
#include "bundles/recipe.h"
#include "bundles/writer.h"
#include "runtime/error.h"
#include "signing/keys.h"
#include "signing/sha256.h"
#include "signing/signature.h"
#include "tests/test_support.h"

namespace galleon::bundles {
namespace {

namespace fs = std::filesystem;
using galleon::testing::read_file;
using galleon::testing::TempDir;
using galleon::testing::write_file;
using nlohmann::json;

template <class F>
Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "expected a galleon::Error";
  return Error(ErrorKind::Internal, "no error");
}

#define EXPECT_REFUSED(expr, kind_, ...)                                             \
  do {                                                                               \
    Error e_ = error_of([&] { (void)(expr); });                                      \
    EXPECT_EQ(e_.kind(), kind_) << e_.message();                                     \
    const std::vector<std::string> words_{__VA_ARGS__};                              \
    for (const std::string& w_ : words_)                                             \
      EXPECT_NE(e_.message().find(w_), std::string::npos) << "'" << w_ << "' not in: " << e_.message(); \
  } while (0)

// ---------------------------------------------------------------- canonical JSON

TEST(CanonicalJson, SortedCompactIntegersOnly) {
  json j = {{"b", 1}, {"a", {{"z", "é"}, {"B", -2}}}, {"c", json::array({1, "x"})}};
  EXPECT_EQ(canonical_dump(j), R"({"a":{"B":-2,"z":"é"},"b":1,"c":[1,"x"]})");
  EXPECT_REFUSED(canonical_dump(json{{"t", 0.5}}), ErrorKind::Invalid, "'t'");
  EXPECT_TRUE(is_canonical(R"({"a":1,"b":[true,null,"\n"]})"));
  for (const char* bad : {R"({"b":1,"a":2})", R"({ "a":1})", R"({"a":1.0})", R"({"a":1e2})", R"({"a":"\u0041"})",
                          R"({"a":1,"a":2})", R"({"a":-0})", "{\"a\":\"\xff\"}", R"({"a":1})" "\n", "nope"})
    EXPECT_FALSE(is_canonical(bad)) << bad;
  EXPECT_REFUSED(parse_canonical(R"({"b":1,"a":2})", "M.json"), ErrorKind::Invalid, "M.json", "byte 2");
}

TEST(Fields, NamesVersionsDecimals) {
  EXPECT_TRUE(is_valid_version("1.0.0"));
  EXPECT_TRUE(is_valid_version("2.1-rc1"));
  EXPECT_TRUE(is_valid_version("10"));
  for (const char* bad : {"", "1.", ".1", "1..2", "01.2", "v1", "1.x", "1.0-", "1.0-a_b"}) EXPECT_FALSE(is_valid_version(bad)) << bad;
  EXPECT_TRUE(is_valid_name("stories260k"));
  EXPECT_FALSE(is_valid_name("Stories"));
  EXPECT_FALSE(is_valid_name("-x"));
  EXPECT_EQ(normalize_decimal("0.80"), "0.8");
  EXPECT_EQ(normalize_decimal("007"), "7");
  EXPECT_EQ(normalize_decimal("1."), "1");
  EXPECT_EQ(normalize_decimal("0.0"), "0");
  EXPECT_EQ(normalize_decimal("-1"), "");
  EXPECT_EQ(normalize_decimal("1e3"), "");
  EXPECT_TRUE(is_canonical_decimal("0.8"));
  EXPECT_FALSE(is_canonical_decimal("0.80"));
}

TEST(MemberPaths, SafeAndUnsafe) {
  for (const char* ok : {"weights.gguf", "bin/galleon-engine", "a/b/c+d_e-1.txt"}) EXPECT_TRUE(is_member_path(ok)) << ok;
  for (const char* bad : {"", "/etc/passwd", "../x", "a/../b", "./a", "a//b", "a/", "a b", "a\nb", "MANIFEST.json",
                          "signatures/x.sig", "caf\xc3\xa9"})
    EXPECT_FALSE(is_member_path(bad)) << bad;
  EXPECT_FALSE(is_member_path(std::string(101, 'a')));
  EXPECT_TRUE(is_signature_path("signatures/0123456789abcdef.sig"));
  EXPECT_FALSE(is_signature_path("signatures/0123456789ABCDEF.sig"));
  EXPECT_EQ(quote_path("a\nb"), "'a\\x0ab'");
}

// ---------------------------------------------------------------- recipes

std::string find_repo_file(const std::string& relative) {
  std::vector<fs::path> roots;
  if (const char* env = std::getenv("GALLEON_SOURCE_DIR")) roots.emplace_back(env);
  for (fs::path p = fs::path(GALLEON_BIN_DIR); !p.empty() && p != p.root_path(); p = p.parent_path()) roots.push_back(p);
  for (fs::path p = fs::current_path(); !p.empty() && p != p.root_path(); p = p.parent_path()) roots.push_back(p);
  roots.push_back(fs::path(GALLEON_SHARED_DIR).parent_path() / "main");
  for (const fs::path& r : roots)
    if (fs::exists(r / relative)) return (r / relative).string();
  return relative;
}

TEST(Recipe, ShippedStories260kParses) {
  std::string path = find_repo_file("recipes/stories260k.yaml");
  ASSERT_TRUE(fs::exists(path)) << "recipes/stories260k.yaml not found (set GALLEON_SOURCE_DIR)";
  Recipe r = load_recipe(path);
  EXPECT_EQ(r.name, "stories260k");
  EXPECT_EQ(r.license, "MIT");
  ASSERT_EQ(r.sources.size(), 2u);
  EXPECT_EQ(r.model.format, ModelSpec::Format::Llama2c);
  EXPECT_EQ(r.model.checkpoint, "stories260K.bin");
  EXPECT_EQ(r.model.tokenizer, "tok512.bin");
  EXPECT_EQ(r.conformance.size(), 3u);
  EXPECT_EQ(r.defaults.temperature, "0.8");
  EXPECT_EQ(r.source("stories260K.bin").urls.at(0),
            "https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/stories260K.bin");
  EXPECT_EQ(r.digest().size(), 64u);
  EXPECT_TRUE(is_canonical(r.canonical_json()));
  for (const SourcePin& pin : r.sources) {
    std::string file = galleon::testing::shared_path("models/stories260K/" + pin.file);
    GALLEON_REQUIRE_SHARED(file);
    signing::FileDigest d = signing::sha256_file(file);
    EXPECT_EQ(d.size, pin.size) << pin.file;
    EXPECT_EQ(d.sha256, pin.sha256) << pin.file;
  }
}

const char* kGoodRecipe = R"(name: tiny
version: 1.2.3
description: A tiny test model
license: MIT
sources:
  - file: model.gguf
    sha256: 0000000000000000000000000000000000000000000000000000000000000001
    size: 10
    urls: [https://example.org/model.gguf]
model:
  format: gguf
  file: model.gguf
defaults:
  temperature: 0.70
  top_p: 1
  top_k: 0
  seed: 7
  max_tokens: 16
conformance:
  - prompt: Hello
    max_tokens: 4
)";

class RecipeErrors : public ::testing::Test {
 protected:
  TempDir dir;
  // Replaces `from` by `to` in the good recipe, writes it and parses it.
  Recipe parse_with(const std::string& from, const std::string& to) {
    std::string text = kGoodRecipe;
    size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    write_file(dir.file("r.yaml"), text);
    return load_recipe(dir.file("r.yaml"));
  }
  std::string at(int line, int col) { return dir.file("r.yaml") + ":" + std::to_string(line) + ":" + std::to_string(col) + ":"; }
};

TEST_F(RecipeErrors, GoodRecipeAndDigest) {
  Recipe r = parse_with("name: tiny", "name: tiny");
  EXPECT_EQ(r.defaults.temperature, "0.7");
  EXPECT_EQ(r.defaults.top_p, "1");
  EXPECT_EQ(r.defaults.seed, 7u);
  std::string d1 = r.digest();
  EXPECT_EQ(parse_with("name: tiny", "name: tiny").digest(), d1);
  EXPECT_EQ(parse_with("temperature: 0.70", "temperature: 0.7").digest(), d1);  // same value
  EXPECT_NE(parse_with("seed: 7", "seed: 8").digest(), d1);
}

TEST_F(RecipeErrors, UnknownKeysGiveLineAndColumn) {
  EXPECT_REFUSED(parse_with("license: MIT\n", "license: MIT\nauthor: me\n"), ErrorKind::Invalid, at(5, 1), "unknown key 'author'");
  EXPECT_REFUSED(parse_with("    size: 10\n", "    size: 10\n    mirror: x\n"), ErrorKind::Invalid, at(9, 5), "sources[0]", "'mirror'");
  EXPECT_REFUSED(parse_with("  top_k: 0\n", "  top_k: 0\n  min_p: 0.1\n"), ErrorKind::Invalid, at(17, 3), "min_p");
  EXPECT_REFUSED(parse_with("name: tiny\n", "name: tiny\nname: other\n"), ErrorKind::Invalid, at(2, 1), "twice");
}

TEST_F(RecipeErrors, MissingPinsAndFields) {
  EXPECT_REFUSED(parse_with("    sha256: 0000000000000000000000000000000000000000000000000000000000000001\n", ""),
                 ErrorKind::Invalid, at(6, 5), "missing required key 'sha256'");
  EXPECT_REFUSED(parse_with("    size: 10\n", ""), ErrorKind::Invalid, "missing required key 'size'");
  EXPECT_REFUSED(parse_with("license: MIT\n", ""), ErrorKind::Invalid, at(1, 1), "'license'");
  EXPECT_REFUSED(parse_with("description: A tiny test model", "description:"), ErrorKind::Invalid, at(3, 1), "description");
}

TEST_F(RecipeErrors, BadHashVersionSizeAndReferences) {
  EXPECT_REFUSED(parse_with("0000000000000000000000000000000000000000000000000000000000000001", "ABCDEF"),
                 ErrorKind::Invalid, at(7, 13), "sha256", "64 lowercase hex");
  EXPECT_REFUSED(parse_with("0000000000000000000000000000000000000000000000000000000000000001",
                            "000000000000000000000000000000000000000000000000000000000000000A"),
                 ErrorKind::Invalid, at(7, 13));
  EXPECT_REFUSED(parse_with("version: 1.2.3", "version: 1.x"), ErrorKind::Invalid, at(2, 10), "version");
  EXPECT_REFUSED(parse_with("size: 10", "size: -10"), ErrorKind::Invalid, at(8, 11), "size");
  EXPECT_REFUSED(parse_with("size: 10", "size: 1e3"), ErrorKind::Invalid, at(8, 11));
  EXPECT_REFUSED(parse_with("size: 10", "size: 0"), ErrorKind::Invalid, at(8, 11));
  EXPECT_REFUSED(parse_with("  file: model.gguf\ndefaults", "  file: other.gguf\ndefaults"), ErrorKind::Invalid,
                 at(12, 9), "not one of the sources");
  EXPECT_REFUSED(parse_with("format: gguf", "format: onnx"), ErrorKind::Invalid, at(11, 11), "gguf");
  EXPECT_REFUSED(parse_with("top_p: 1", "top_p: 1.5"), ErrorKind::Invalid, at(15, 10), "top_p");
  EXPECT_REFUSED(parse_with("urls: [https://example.org/model.gguf]", "urls: [ftp://x]"), ErrorKind::Invalid, at(9, 12), "URL");
  EXPECT_REFUSED(parse_with("  - prompt: Hello\n    max_tokens: 4\n", ""), ErrorKind::Invalid, "conformance", "non-empty list");
  EXPECT_REFUSED(parse_with("name: tiny", "name: [tiny"), ErrorKind::Invalid, dir.file("r.yaml"), "YAML");
}

// ---------------------------------------------------------------- manifest

struct Fixture {
  TempDir dir;
  Manifest manifest;
  std::map<std::string, MemberSource> sources;
  std::map<std::string, std::string> contents;

  Fixture() {
    add("bin/galleon-engine", Role::Engine, "#!/bin/sh\necho engine\n");
    add("weights.gguf", Role::Weights, std::string(5000, 'w') + "tail");
    add("tokenizer.bin", Role::Tokenizer, "tok");
    add("recipe.json", Role::Recipe, "{}");
    add("empty.txt", Role::License, "");
    manifest.name = "tiny";
    manifest.version = "1.0.0";
    manifest.description = "A tiny test bundle";
    manifest.license = "MIT";
    manifest.engine.platform = "linux-x86_64";
    manifest.model = {"llama", 260000, {"f32", "q8_0"}};
    manifest.recipe_sha256 = std::string(64, 'c');
    manifest.sort_members();
  }

  void add(const std::string& path, Role role, const std::string& data) {
    std::string file = dir.file("src-" + std::to_string(contents.size()));
    write_file(file, data);
    manifest.members.push_back(describe_file(path, role, file));
    sources[path] = {file, 0};
    contents[path] = data;
  }

  std::string write(const std::string& out, const std::vector<signing::Signature>& sigs = {}) {
    write_bundle(out, manifest, sigs, sources);
    return read_file(out);
  }
};

TEST(Manifest, RoundTripAndId) {
  Fixture f;
  std::string bytes = f.manifest.to_bytes();
  EXPECT_TRUE(is_canonical(bytes));
  EXPECT_EQ(bytes.substr(0, 12), R"({"defaults":)");
  EXPECT_NE(bytes.find(R"("format":"galleon-bundle/1")"), std::string::npos);
  EXPECT_NE(bytes.find(R"({"path":"bin/galleon-engine","role":"engine","sha256":")"), std::string::npos);
  EXPECT_NE(bytes.find(R"("temperature":"0.8")"), std::string::npos);
  Manifest back = parse_manifest(bytes, "MANIFEST.json");
  EXPECT_EQ(back, f.manifest);
  EXPECT_EQ(f.manifest.id(), "sha256:" + signing::sha256_hex(bytes));
  EXPECT_EQ(f.manifest.find_role(Role::Weights)->path, "weights.gguf");
}

TEST(Manifest, StrictParsing) {
  Fixture f;
  json j = json::parse(f.manifest.to_bytes());
  auto refuse = [&](json changed, const char* word) {
    EXPECT_REFUSED(parse_manifest(changed.dump(), "MANIFEST.json"), ErrorKind::Invalid, "MANIFEST.json", word);
  };
  json extra = j;
  extra["zzz"] = 1;
  refuse(extra, "zzz");
  json missing = j;
  missing.erase("license");
  refuse(missing, "license");
  json role = j;
  role["members"][0]["role"] = "binary";
  refuse(role, "members[0].role");
  json unsorted = j;
  std::swap(unsorted["members"][0], unsorted["members"][1]);
  refuse(unsorted, "sorted");
  json evil = j;
  evil["members"][0]["path"] = "../../etc/passwd";
  refuse(evil, "members[0].path");
  json hash = j;
  hash["members"][1]["sha256"] = "xyz";
  refuse(hash, "members[1].sha256");
  json neg = j;
  neg["members"][1]["size"] = -1;
  refuse(neg, "members[1].size");
  json fmt = j;
  fmt["format"] = "galleon-bundle/2";
  refuse(fmt, "format");
  EXPECT_REFUSED(parse_manifest(j.dump(2), "MANIFEST.json"), ErrorKind::Invalid, "canonical");
  std::string with_float = j.dump();
  with_float.replace(with_float.find("260000"), 6, "2.6e5");
  EXPECT_REFUSED(parse_manifest(with_float, "MANIFEST.json"), ErrorKind::Invalid, "float");
}

// ---------------------------------------------------------------- writer

struct TarHeader {
  std::string name, mode, uid, gid, size, mtime, uname, gname, magic;
  char type;
};

std::string field(const std::string& block, size_t off, size_t len) {
  std::string s = block.substr(off, len);
  return s.substr(0, s.find('\0'));
}

TarHeader header_at(const std::string& bytes, size_t off) {
  std::string b = bytes.substr(off, 512);
  return {field(b, 0, 100), field(b, 100, 8), field(b, 108, 8), field(b, 116, 8), field(b, 124, 12),
          field(b, 136, 12), field(b, 265, 32), field(b, 297, 32), b.substr(257, 8), b[156]};
}

TEST(Writer, DeterministicAcrossFoldersUmaskTimeZoneAndCwd) {
  Fixture f1, f2;  // same contents, different folders
  signing::PrivateKey key = signing::PrivateKey::generate();
  auto sig = signing::sign_bundle_id(key, f1.manifest.id());
  const char* old_tz = std::getenv("TZ");
  std::string saved_tz = old_tz ? old_tz : "";
  fs::path old_cwd = fs::current_path();

  ::setenv("TZ", "UTC", 1);
  tzset();
  mode_t old_mask = ::umask(022);
  fs::current_path(f1.dir.path());
  std::string a = f1.write("a.galleon", {sig});

  ::setenv("TZ", "Pacific/Kiritimati", 1);
  tzset();
  ::umask(077);
  fs::current_path(f2.dir.path());
  std::string b = f2.write(f2.dir.file("b.galleon"), {sig});

  ::umask(old_mask);
  fs::current_path(old_cwd);
  if (old_tz) ::setenv("TZ", saved_tz.c_str(), 1); else ::unsetenv("TZ");
  tzset();
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == b) << "bundles differ";
  EXPECT_FALSE(fs::exists(f1.dir.file("a.galleon.tmp")));
}

TEST(Writer, TarHeadersAndAlignedOffsets) {
  Fixture f;
  signing::PrivateKey k1 = signing::PrivateKey::generate(), k2 = signing::PrivateKey::generate();
  std::vector<signing::Signature> sigs = {signing::sign_bundle_id(k1, f.manifest.id()), signing::sign_bundle_id(k2, f.manifest.id())};
  WriteResult r = write_bundle(f.dir.file("x.galleon"), f.manifest, sigs, f.sources);
  std::string bytes = read_file(f.dir.file("x.galleon"));
  EXPECT_EQ(r.bundle_id, f.manifest.id());
  EXPECT_EQ(r.file_size, bytes.size());
  EXPECT_EQ(bytes.size() % 512, 0u);
  ASSERT_EQ(r.entries.size(), 1 + 2 + f.manifest.members.size());
  // Order: manifest, sorted signatures, members sorted by path.
  EXPECT_EQ(r.entries[0].path, "MANIFEST.json");
  EXPECT_LT(r.entries[1].path, r.entries[2].path);
  EXPECT_EQ(r.entries[1].path.substr(0, 11), "signatures/");
  for (size_t i = 0; i < f.manifest.members.size(); ++i) EXPECT_EQ(r.entries[3 + i].path, f.manifest.members[i].path);
  uint64_t expected = 512;
  for (const EntryLocation& loc : r.entries) {
    EXPECT_EQ(loc.offset % 512, 0u) << loc.path;
    EXPECT_EQ(loc.offset, expected) << loc.path;  // no extended headers in between
    TarHeader h = header_at(bytes, loc.offset - 512);
    EXPECT_EQ(h.name, loc.path);
    EXPECT_EQ(h.type, '0') << loc.path;
    EXPECT_EQ(h.mode, loc.path == "bin/galleon-engine" ? "000755 " : "000644 ") << loc.path;
    EXPECT_EQ(h.uid, "000000 ");
    EXPECT_EQ(h.gid, "000000 ");
    EXPECT_EQ(h.mtime, "00000000000 ");
    EXPECT_EQ(h.uname, "");
    EXPECT_EQ(h.gname, "");
    EXPECT_EQ(h.magic, std::string("ustar\0" "00", 8));
    EXPECT_EQ(std::stoull(h.size, nullptr, 8), loc.size);
    expected = loc.offset + (loc.size + 511) / 512 * 512 + 512;
    if (f.contents.count(loc.path)) {
      EXPECT_EQ(bytes.substr(loc.offset, loc.size), f.contents[loc.path]) << loc.path;
    }
  }
  EXPECT_EQ(bytes.substr(0, 13), "MANIFEST.json");
  EXPECT_EQ(bytes.substr(r.entries[0].offset, r.entries[0].size), f.manifest.to_bytes());
  EXPECT_EQ(bytes.size(), expected - 512 + 1024);  // two zero blocks end the archive, no padding
  EXPECT_EQ(bytes.substr(bytes.size() - 1024), std::string(1024, '\0'));
}

TEST(Writer, RefusesSourcesThatDoNotMatchTheManifest) {
  Fixture f;
  write_file(f.sources["tokenizer.bin"].file, "TOK");
  EXPECT_REFUSED(f.write(f.dir.file("x.galleon")), ErrorKind::Invalid, "'tokenizer.bin'", "sha256");
  EXPECT_FALSE(fs::exists(f.dir.file("x.galleon")));
  EXPECT_FALSE(fs::exists(f.dir.file("x.galleon.tmp")));
  write_file(f.sources["tokenizer.bin"].file, "to");
  EXPECT_REFUSED(f.write(f.dir.file("x.galleon")), ErrorKind::Invalid, "'tokenizer.bin'", "2 bytes");
  Fixture g;
  auto other = signing::sign_bundle_id(signing::PrivateKey::generate(), "sha256:" + std::string(64, '0'));
  EXPECT_REFUSED(g.write(g.dir.file("y.galleon"), {other}), ErrorKind::Invalid, "signs");
}

// ---------------------------------------------------------------- reader

class StringSink : public MemberSink {
 public:
  std::map<std::string, std::string> data;
  std::vector<std::string> verified_paths;
  std::string current;
  void begin(const Member& m, uint64_t) override { current = m.path; }
  void write(const void* p, size_t n) override { data[current].append(static_cast<const char*>(p), n); }
  void verified(const Member& m) override { verified_paths.push_back(m.path); }
};

TEST(Reader, VerifiesExtractsAndLocates) {
  Fixture f;
  signing::PrivateKey key = signing::PrivateKey::generate();
  WriteResult w = write_bundle(f.dir.file("x.galleon"), f.manifest, {signing::sign_bundle_id(key, f.manifest.id())}, f.sources);
  BundleReader r(f.dir.file("x.galleon"));
  EXPECT_EQ(r.id(), f.manifest.id());
  EXPECT_EQ(r.manifest(), f.manifest);
  ASSERT_EQ(r.signatures().size(), 1u);
  EXPECT_EQ(r.signatures()[0].name, "signatures/" + key.key_id() + ".sig");
  StringSink sink;
  auto locations = r.verify([&](const Member&) { return &sink; });
  EXPECT_EQ(locations.size(), w.entries.size());
  for (size_t i = 0; i < locations.size(); ++i) EXPECT_EQ(locations[i].offset, w.entries[i].offset);
  EXPECT_EQ(sink.verified_paths.size(), f.manifest.members.size());
  for (const auto& [path, data] : f.contents) EXPECT_EQ(sink.data[path], data) << path;
  StringSink one;
  r.extract_member("weights.gguf", one);
  EXPECT_EQ(one.data.size(), 1u);
  EXPECT_EQ(one.data["weights.gguf"], f.contents["weights.gguf"]);
  EXPECT_REFUSED(r.extract_member("nope", one), ErrorKind::NotFound, "nope");
  std::string bytes = read_file(f.dir.file("x.galleon"));
  auto members = r.locate_members();
  ASSERT_EQ(members.size(), f.manifest.members.size());
  for (const EntryLocation& loc : members) {
    EXPECT_EQ(loc.offset % 512, 0u);
    EXPECT_EQ(bytes.substr(loc.offset, loc.size), f.contents[loc.path]) << loc.path;
  }
  // The policy sees the signature as valid and trusted once the key is trusted.
  signing::TrustStore store(f.dir.file("trust"));
  store.add(key.public_key());
  EXPECT_TRUE(signing::check_policy(store, r.id(), r.signatures()).threshold_met);
}

TEST(Reader, AddSignatureKeepsIdAndReVerifies) {
  Fixture f;
  std::string path = f.dir.file("x.galleon");
  f.write(path);
  std::string unsigned_bytes = read_file(path);
  signing::PrivateKey a = signing::PrivateKey::generate(), b = signing::PrivateKey::generate();
  std::string id = BundleReader(path).id();
  WriteResult r1 = add_signature(path, signing::sign_bundle_id(a, id));
  EXPECT_EQ(r1.bundle_id, id);
  add_signature(path, signing::sign_bundle_id(b, id));
  std::string twice = read_file(path);
  add_signature(path, signing::sign_bundle_id(b, id));  // same key again: replaced, Ed25519 is deterministic
  EXPECT_EQ(read_file(path), twice);
  BundleReader r(path);
  EXPECT_EQ(r.id(), id);
  EXPECT_EQ(r.signatures().size(), 2u);
  EXPECT_NO_THROW(r.verify());
  EXPECT_NE(twice, unsigned_bytes);
  // Same as writing both signatures at once.
  EXPECT_EQ(f.write(f.dir.file("y.galleon"), {signing::sign_bundle_id(b, id), signing::sign_bundle_id(a, id)}), twice);
  EXPECT_REFUSED(add_signature(path, signing::sign_bundle_id(a, "sha256:" + std::string(64, '1'))), ErrorKind::Invalid, "signs");
}

// A raw tar entry for crafting hostile archives with libarchive directly.
struct RawEntry {
  RawEntry(std::string path_, std::string data_, mode_t type_ = AE_IFREG, int perm_ = 0644,
           int64_t uid_ = 0, std::string link_ = {}, bool hardlink_ = false)
      : path(std::move(path_)), data(std::move(data_)), type(type_), perm(perm_), uid(uid_),
        link(std::move(link_)), hardlink(hardlink_) {}
  std::string path;
  std::string data;
  mode_t type;
  int perm;
  int64_t uid;
  std::string link;  // symlink target or hardlink source
  bool hardlink;
  std::string xattr;
};

void write_raw_tar(const std::string& file, const std::vector<RawEntry>& entries) {
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  archive_write_set_bytes_in_last_block(a, 1);
  ASSERT_EQ(archive_write_open_filename(a, file.c_str()), ARCHIVE_OK);
  for (const RawEntry& r : entries) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, r.path.c_str());
    archive_entry_set_filetype(e, r.type);
    archive_entry_set_perm(e, static_cast<mode_t>(r.perm));
    archive_entry_set_uid(e, r.uid);
    archive_entry_set_mtime(e, 0, 0);
    if (r.type == AE_IFLNK) archive_entry_set_symlink(e, r.link.c_str());
    if (r.hardlink) archive_entry_set_hardlink(e, r.link.c_str());
    if (!r.xattr.empty()) archive_entry_xattr_add_entry(e, "user.x", r.xattr.data(), r.xattr.size());
    archive_entry_set_size(e, r.type == AE_IFREG && !r.hardlink ? static_cast<la_int64_t>(r.data.size()) : 0);
    EXPECT_EQ(archive_write_header(a, e), ARCHIVE_OK) << archive_error_string(a);
    if (r.type == AE_IFREG && !r.hardlink) archive_write_data(a, r.data.data(), r.data.size());
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
}

class Hostile : public ::testing::Test {
 protected:
  TempDir dir;
  Manifest m;
  std::string file = dir.file("h.galleon");

  void SetUp() override {
    Fixture f;
    m = f.manifest;
    m.members.clear();
    m.members.push_back({"a.bin", 5, signing::sha256_hex("aaaaa"), Role::Weights});
    m.members.push_back({"b.bin", 3, signing::sha256_hex("bbb"), Role::Tokenizer});
  }
  RawEntry manifest_entry() { return {"MANIFEST.json", m.to_bytes()}; }
  RawEntry a() { return {"a.bin", "aaaaa"}; }
  RawEntry b() { return {"b.bin", "bbb"}; }

  // Writes the entries and expects the reader (head or full verify) to refuse, naming `words`.
  void expect_refused(const std::vector<RawEntry>& entries, std::initializer_list<const char*> words) {
    write_raw_tar(file, entries);
    expect_file_refused(words);
  }
  void expect_file_refused(std::initializer_list<const char*> words) {
    Error e = error_of([&] { BundleReader(file).verify(); });
    EXPECT_EQ(e.kind(), ErrorKind::Invalid) << e.message();
    EXPECT_NE(e.message().find(file), std::string::npos) << e.message();
    for (const char* w : words) EXPECT_NE(e.message().find(w), std::string::npos) << "'" << w << "' not in: " << e.message();
  }
  std::string valid_bytes() {
    write_raw_tar(file, {manifest_entry(), a(), b()});
    EXPECT_NO_THROW(BundleReader(file).verify());
    return read_file(file);
  }
};

TEST_F(Hostile, ValidBaseline) { valid_bytes(); }

// GALLEON_WRITE_BUNDLE_CORPUS=<folder> writes the seeds of fuzz/bundle_fuzz.cpp
// (fuzz/corpus/bundle): the valid baseline, unsigned and signed.
TEST_F(Hostile, WritesFuzzSeeds) {
  std::string good = valid_bytes();
  const char* dir = std::getenv("GALLEON_WRITE_BUNDLE_CORPUS");
  if (dir == nullptr) GTEST_SKIP() << "GALLEON_WRITE_BUNDLE_CORPUS not set";
  write_file(std::string(dir) + "/unsigned.galleon", good);
  signing::PrivateKey key = signing::PrivateKey::generate();
  add_signature(file, signing::sign_bundle_id(key, m.id()));
  write_file(std::string(dir) + "/signed.galleon", read_file(file));
}

TEST_F(Hostile, UnsafePaths) {
  expect_refused({manifest_entry(), {"../evil", "x"}, a(), b()}, {"'../evil'", "unsafe path"});
  expect_refused({manifest_entry(), {"/etc/passwd", "x"}, a(), b()}, {"'/etc/passwd'", "unsafe path"});
  expect_refused({manifest_entry(), {"a b", "x"}, a(), b()}, {"'a b'", "unsafe path"});
  expect_refused({manifest_entry(), {"x\x01y", "x"}, a(), b()}, {"'x\\x01y'"});
}

TEST_F(Hostile, NonRegularEntries) {
  expect_refused({manifest_entry(), {"a.bin", "", AE_IFLNK, 0777, 0, "/etc/passwd"}, b()}, {"'a.bin'", "symbolic link"});
  expect_refused({manifest_entry(), a(), {"b.bin", "", AE_IFREG, 0644, 0, "a.bin", true}}, {"'b.bin'", "hard link"});
  expect_refused({manifest_entry(), {"a.bin", "", AE_IFDIR, 0755}, b()}, {"a.bin", "directory"});
  expect_refused({manifest_entry(), {"a.bin", "", AE_IFIFO}, b()}, {"'a.bin'", "fifo"});
  expect_refused({manifest_entry(), {"a.bin", "", AE_IFCHR}, b()}, {"'a.bin'", "character device"});
}

TEST_F(Hostile, MembersDuplicateMissingExtraOrderAndSize) {
  expect_refused({manifest_entry(), a(), a(), b()}, {"duplicate", "'a.bin'"});
  expect_refused({manifest_entry(), a()}, {"'b.bin'", "missing"});
  expect_refused({manifest_entry(), b()}, {"'b.bin'", "'a.bin'"});
  expect_refused({manifest_entry(), a(), b(), {"c.bin", "c"}}, {"'c.bin'", "not listed in the manifest"});
  expect_refused({manifest_entry(), {"c.bin", "c"}, a(), b()}, {"'c.bin'", "not listed in the manifest"});
  expect_refused({manifest_entry(), b(), a()}, {"'b.bin'", "out of order"});
  expect_refused({manifest_entry(), {"a.bin", "aaaaaa"}, b()}, {"'a.bin'", "size in the archive is 6, manifest says 5"});
  expect_refused({manifest_entry(), {"a.bin", "aaaab"}, b()}, {"'a.bin'", "sha256"});
  expect_refused({manifest_entry(), a(), b(), manifest_entry()}, {"duplicate", "MANIFEST.json"});
}

TEST_F(Hostile, HeaderFieldsAndExtendedHeaders) {
  RawEntry wrong_mode = a();
  wrong_mode.perm = 0755;
  expect_refused({manifest_entry(), wrong_mode, b()}, {"'a.bin'", "mode 0755, expected 0644"});
  RawEntry owner = b();
  owner.uid = 1000;
  expect_refused({manifest_entry(), a(), owner}, {"'b.bin'", "uid 0"});
  RawEntry xattr = a();
  xattr.xattr = "hello";
  expect_refused({manifest_entry(), xattr, b()}, {"'a.bin'"});
}

TEST_F(Hostile, ManifestAndSignatureEntries) {
  expect_refused({a(), manifest_entry(), b()}, {"first entry", "'a.bin'", "MANIFEST.json"});
  expect_refused({{"MANIFEST.json", json::parse(m.to_bytes()).dump(1)}, a(), b()}, {"MANIFEST.json", "canonical"});
  expect_refused({{"MANIFEST.json", std::string((1 << 20) + 1, ' ')}, a(), b()}, {"MANIFEST.json", "1048576"});
  expect_refused({manifest_entry(), {"signatures/zz.sig", "{}"}, a(), b()}, {"'signatures/zz.sig'", "key id"});
  expect_refused({manifest_entry(), {"signatures/0000000000000000.sig", std::string(65 * 1024, 'x')}, a(), b()},
                 {"'signatures/0000000000000000.sig'", "65536"});
  expect_refused({manifest_entry(), {"signatures/1111111111111111.sig", "{}"}, {"signatures/0000000000000000.sig", "{}"}, a(), b()},
                 {"sorted"});
  expect_refused({manifest_entry(), a(), {"signatures/0000000000000000.sig", "{}"}, b()}, {"'signatures/0000000000000000.sig'", "out of place"});
}

TEST_F(Hostile, ByteSurgery) {
  std::string good = valid_bytes();
  const size_t a_data = good.find("aaaaa");
  const size_t b_data = good.find("bbb");
  ASSERT_NE(a_data, std::string::npos);
  // Empty file.
  write_file(file, "");
  expect_file_refused({"empty file"});
  // Not a tar archive.
  write_file(file, std::string(2048, 'z'));
  expect_file_refused({});
  // Truncated inside member b's data, and at the end blocks.
  write_file(file, good.substr(0, b_data + 1));
  expect_file_refused({"'b.bin'"});
  write_file(file, good.substr(0, good.size() - 1024));
  expect_file_refused({"truncated"});
  write_file(file, good.substr(0, good.size() - 512));
  expect_file_refused({"truncated"});
  // Trailing garbage after the archive end, even zeros.
  write_file(file, good + "garbage");
  expect_file_refused({"trailing data"});
  write_file(file, good + std::string(512, '\0'));
  expect_file_refused({"trailing data"});
  // A flipped byte in member data.
  std::string flipped = good;
  flipped[a_data + 2] ^= 1;
  write_file(file, flipped);
  expect_file_refused({"'a.bin'", "sha256"});
  // A flipped byte in a tar header (checksum no longer matches).
  std::string header = good;
  header[b_data - 512 + 1] ^= 1;
  write_file(file, header);
  expect_file_refused({});
  // A flipped byte in the manifest changes the id (or breaks the manifest).
  std::string manifest_flip = good;
  size_t hash_at = good.find(signing::sha256_hex("bbb"));
  manifest_flip[hash_at] = manifest_flip[hash_at] == '0' ? '1' : '0';
  write_file(file, manifest_flip);
  expect_file_refused({"'b.bin'", "sha256"});
  EXPECT_NE(BundleReader(file).id(), m.id());
}

}  // namespace
}  // namespace galleon::bundles
