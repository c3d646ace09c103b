// Tests of the signing layer: real files, real OpenSSL.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <regex>

#include "runtime/error.h"
#include "signing/encoding.h"
#include "signing/files.h"
#include "signing/keys.h"
#include "signing/policy.h"
#include "signing/sha256.h"
#include "signing/signature.h"
#include "signing/trust.h"
#include "tests/test_support.h"

namespace galleon::signing {
namespace {

using galleon::testing::TempDir;
using galleon::testing::read_file;
using galleon::testing::write_file;

const std::string kId = "sha256:" + std::string(64, 'a');
const std::string kOtherId = "sha256:" + std::string(64, 'b');

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

TEST(Sha256, KnownVectorsStreamingAndFiles) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256 h;
  h.update("a");
  h.update("bc");
  EXPECT_EQ(h.finish_hex(), sha256_hex("abc"));
  TempDir dir;
  std::string big(3 << 20, 'x');
  write_file(dir.file("f"), big);
  FileDigest d = sha256_file(dir.file("f"));
  EXPECT_EQ(d.size, big.size());
  EXPECT_EQ(d.sha256, sha256_hex(big));
  EXPECT_EQ(sha256_file_range(dir.file("f"), 10, 100).sha256, sha256_hex(big.substr(10, 100)));
  EXPECT_EQ(error_of([&] { sha256_file_range(dir.file("f"), big.size() - 5, 10); }).kind(), ErrorKind::Invalid);
  EXPECT_EQ(error_of([&] { sha256_file(dir.file("missing")); }).kind(), ErrorKind::NotFound);
}

TEST(Encoding, Base64IsStrictAndCanonical) {
  EXPECT_EQ(base64_encode("hello"), "aGVsbG8=");
  EXPECT_EQ(base64_decode("aGVsbG8=", "x"), "hello");
  EXPECT_EQ(base64_decode("", "x"), "");
  for (const char* bad : {"aGVsbG8", "aGVsbG9=", " aGVsbG8=", "aGVs\nbG8=", "aGVsbG8==", "a===", "aGV*bG8="}) {
    Error e = error_of([&] { base64_decode(bad, "field"); });
    EXPECT_EQ(e.kind(), ErrorKind::Invalid) << bad;
    EXPECT_NE(e.message().find("field"), std::string::npos);
  }
  EXPECT_TRUE(is_sha256_hex(std::string(64, 'f')));
  EXPECT_FALSE(is_sha256_hex(std::string(64, 'F')));
  EXPECT_FALSE(is_sha256_hex(std::string(63, 'f')));
}

TEST(Keys, GenerateWritesPrivateKeyWithMode0600EvenUnderUmaskZero) {
  TempDir dir;
  mode_t old = ::umask(0);
  KeyFiles files = generate_key_files(dir.path().string(), "alice");
  ::umask(old);
  struct stat st {};
  ASSERT_EQ(::stat(files.private_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_NE(read_file(files.private_path).find("-----BEGIN PRIVATE KEY-----"), std::string::npos);  // PKCS#8
  std::string line = read_file(files.public_path);
  EXPECT_TRUE(std::regex_match(line, std::regex("galleon-ed25519 [A-Za-z0-9+/]{43}= alice\n"))) << line;
  PublicKey pub = load_public_key(files.public_path);
  EXPECT_EQ(pub.comment, "alice");
  EXPECT_EQ(pub.key_id(), sha256_hex(std::string(reinterpret_cast<const char*>(pub.raw.data()), 32)).substr(0, 16));
  EXPECT_TRUE(is_key_id(pub.key_id()));
  PrivateKey loaded = PrivateKey::load(files.private_path);
  EXPECT_EQ(loaded.public_key().raw, pub.raw);
  // Never overwritten.
  EXPECT_EQ(error_of([&] { generate_key_files(dir.path().string(), "alice"); }).kind(), ErrorKind::Usage);
}

TEST(Keys, LoadRefusesAPrivateKeyReadableByOthers) {
  TempDir dir;
  PrivateKey key = PrivateKey::generate();
  write_file(dir.file("k.key"), key.to_pem());
  ::chmod(dir.file("k.key").c_str(), 0644);
  Error e = error_of([&] { PrivateKey::load(dir.file("k.key")); });
  EXPECT_EQ(e.kind(), ErrorKind::Untrusted);
  EXPECT_NE(e.message().find("0644"), std::string::npos) << e.message();
}

TEST(Keys, PublicKeyParsingErrors) {
  PublicKey pub = PrivateKey::generate().public_key("bob the builder");
  EXPECT_EQ(parse_public_key(pub.to_line(), "p").comment, "bob the builder");
  EXPECT_EQ(parse_public_key(pub.to_line(), "p").raw, pub.raw);
  for (std::string bad : {std::string("ssh-ed25519 AAAA x\n"), std::string("galleon-ed25519 aGVsbG8= x\n"),
                          pub.to_line() + "second line\n", std::string("galleon-ed25519\n")}) {
    Error e = error_of([&] { parse_public_key(bad, "keys/x.pub"); });
    EXPECT_EQ(e.kind(), ErrorKind::Invalid) << bad;
    EXPECT_NE(e.message().find("keys/x.pub"), std::string::npos);
  }
  EXPECT_EQ(error_of([] { PrivateKey::from_pem("not pem", "k"); }).kind(), ErrorKind::Invalid);
}

TEST(Signatures, SignVerifyWrongKeyAndTampering) {
  PrivateKey alice = PrivateKey::generate();
  PrivateKey mallory = PrivateKey::generate();
  Signature sig = sign_bundle_id(alice, kId);
  EXPECT_EQ(sig.key_id, alice.key_id());
  EXPECT_TRUE(sig.verify_with(alice.public_key()));
  EXPECT_TRUE(alice.public_key().verify(signature_message(kId), sig.signature));
  EXPECT_EQ(signature_message(kId), "galleon-bundle-signature/1\n" + kId);
  // Wrong key.
  EXPECT_FALSE(sig.verify_with(mallory.public_key()));
  Signature relabeled = sig;
  relabeled.key_id = mallory.key_id();
  EXPECT_FALSE(relabeled.verify_with(mallory.public_key()));
  // Tampered signature and tampered id.
  Signature flipped = sig;
  flipped.signature[10] ^= 1;
  EXPECT_FALSE(flipped.verify_with(alice.public_key()));
  Signature moved = sig;
  moved.bundle_id = kOtherId;
  EXPECT_FALSE(moved.verify_with(alice.public_key()));
  // Without the domain prefix the raw id does not verify.
  EXPECT_FALSE(alice.public_key().verify(kId, sig.signature));
  EXPECT_EQ(error_of([&] { sign_bundle_id(alice, "sha256:xyz"); }).kind(), ErrorKind::Usage);
}

TEST(Signatures, FileIsCanonicalJsonAndParsingIsStrict) {
  PrivateKey alice = PrivateKey::generate();
  Signature sig = sign_bundle_id(alice, kId);
  std::string json = sig.to_json();
  EXPECT_TRUE(std::regex_match(json, std::regex(R"(\{"algorithm":"ed25519","bundle":"sha256:a{64}","format":"galleon-signature/1","key":"[0-9a-f]{16}","signature":"[A-Za-z0-9+/]{86}=="\})"))) << json;
  Signature back = parse_signature(json, "s");
  EXPECT_EQ(back.signature, sig.signature);
  EXPECT_EQ(back.key_id, sig.key_id);
  EXPECT_EQ(back.bundle_id, kId);
  std::vector<std::string> bad = {
      json.substr(0, json.size() - 1),                                 // not JSON
      " " + json,                                                      // whitespace
      std::regex_replace(json, std::regex("ed25519"), "rsa"),          // algorithm
      std::regex_replace(json, std::regex("\"key\":\"[0-9a-f]+\""), "\"key\":\"XYZ\""),
      std::regex_replace(json, std::regex("\\}$"), ",\"zzz\":1}"),     // unknown field
      std::regex_replace(json, std::regex("galleon-signature/1"), "galleon-signature/2"),
      std::regex_replace(json, std::regex("=="), ""),                  // bad base64
  };
  for (const std::string& b : bad) {
    Error e = error_of([&] { parse_signature(b, "signatures/x.sig"); });
    EXPECT_EQ(e.kind(), ErrorKind::Invalid) << b;
    EXPECT_NE(e.message().find("signatures/x.sig"), std::string::npos) << e.message();
  }
}

class TrustTest : public ::testing::Test {
 protected:
  TempDir dir;
  TrustStore store{(dir.path() / "trust").string()};
  PrivateKey a = PrivateKey::generate(), b = PrivateKey::generate(), c = PrivateKey::generate();

  SignatureBlob blob(const PrivateKey& k, const std::string& id = kId) {
    Signature s = sign_bundle_id(k, id);
    return {s.member_name(), s.to_json()};
  }
};

TEST_F(TrustTest, AddListLookupRemove) {
  EXPECT_TRUE(store.list().empty());
  write_file(dir.file("a.pub"), a.public_key("a").to_line());
  store.add_file(dir.file("a.pub"));
  store.add(b.public_key("b"));
  store.add(b.public_key("b"));  // idempotent
  auto keys = store.list();
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_LT(keys[0].key_id(), keys[1].key_id());
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "trust" / (a.key_id() + ".pub")));
  EXPECT_EQ(store.lookup(a.key_id())->comment, "a");
  EXPECT_FALSE(store.lookup(c.key_id()));
  store.remove(a.key_id());
  EXPECT_FALSE(store.lookup(a.key_id()));
  EXPECT_TRUE(store.lookup_removed(a.key_id()));
  EXPECT_EQ(store.list().size(), 1u);
  EXPECT_EQ(error_of([&] { store.remove(a.key_id()); }).kind(), ErrorKind::NotFound);
  EXPECT_EQ(error_of([&] { store.remove("../../etc"); }).kind(), ErrorKind::Usage);
  // Adding validates the file.
  write_file(dir.file("bad.pub"), "galleon-ed25519 AAAA\n");
  EXPECT_EQ(error_of([&] { store.add_file(dir.file("bad.pub")); }).kind(), ErrorKind::Invalid);
  // Re-adding a removed key trusts it again.
  store.add(a.public_key("a"));
  EXPECT_TRUE(store.lookup(a.key_id()));
  EXPECT_FALSE(store.lookup_removed(a.key_id()));
}

TEST_F(TrustTest, ThresholdTwoOfThree) {
  for (auto* k : {&a, &b, &c}) store.add(k->public_key());
  std::vector<SignatureBlob> two = {blob(a), blob(b)};
  PolicyResult r2 = check_policy(store, kId, two, 2);
  EXPECT_TRUE(r2.threshold_met) << r2.explain();
  EXPECT_EQ(r2.trusted_signers.size(), 2u);
  EXPECT_FALSE(check_policy(store, kId, two, 3).threshold_met);
  EXPECT_FALSE(check_policy(store, kId, {blob(a)}, 2).threshold_met);
  // The same signer twice counts once.
  EXPECT_FALSE(check_policy(store, kId, {blob(a), blob(a)}, 2).threshold_met);
  EXPECT_TRUE(check_policy(store, kId, {blob(a), blob(b), blob(c)}, 3).threshold_met);
  PolicyResult none = check_policy(store, kId, {}, 1);
  EXPECT_FALSE(none.threshold_met);
  EXPECT_NE(none.explain().find("not signed"), std::string::npos);
  EXPECT_EQ(error_of([&] { check_policy(store, kId, two, 0); }).kind(), ErrorKind::Usage);
}

TEST_F(TrustTest, ReasonsForEachRefusal) {
  store.add(a.public_key());
  store.add(c.public_key());
  store.remove(c.key_id());
  SignatureBlob bad = blob(a);
  Signature s = parse_signature(bad.bytes, "x");
  s.signature[0] ^= 0x80;
  bad.bytes = s.to_json();
  SignatureBlob wrong_name = blob(a);
  wrong_name.name = "signatures/" + b.key_id() + ".sig";
  std::vector<SignatureBlob> blobs = {bad, blob(a, kOtherId), blob(b), blob(c), {"signatures/0000000000000000.sig", "{}"},
                                      wrong_name};
  PolicyResult r = check_policy(store, kId, blobs, 1, {b.public_key()});
  ASSERT_EQ(r.checks.size(), blobs.size());
  EXPECT_FALSE(r.threshold_met);
  EXPECT_EQ(r.checks[0].status, SignatureStatus::BadSignature);
  EXPECT_FALSE(r.checks[0].valid);
  EXPECT_EQ(r.checks[1].status, SignatureStatus::OtherBundle);
  EXPECT_NE(r.checks[1].reason.find(kOtherId), std::string::npos);
  EXPECT_EQ(r.checks[2].status, SignatureStatus::UnknownKey);
  EXPECT_TRUE(r.checks[2].valid);  // verified with the extra key, but still not trusted
  EXPECT_EQ(r.checks[3].status, SignatureStatus::RemovedKey);
  EXPECT_NE(r.checks[3].reason.find(c.key_id()), std::string::npos);
  EXPECT_EQ(r.checks[4].status, SignatureStatus::Malformed);
  EXPECT_EQ(r.checks[5].status, SignatureStatus::Malformed);
  std::string text = r.explain();
  for (const char* word : {"bad-signature", "other-bundle", "unknown-key", "removed-key", "malformed"})
    EXPECT_NE(text.find(word), std::string::npos) << text;
  blobs.push_back(blob(a));
  EXPECT_TRUE(check_policy(store, kId, blobs).threshold_met);
}

TEST(Files, WriteExclusiveRefusesToOverwrite) {
  TempDir dir;
  write_file_exclusive(dir.file("x"), "1", 0600);
  EXPECT_EQ(error_of([&] { write_file_exclusive(dir.file("x"), "2", 0600); }).kind(), ErrorKind::Usage);
  write_file_atomic(dir.file("y"), "abc", 0644);
  EXPECT_EQ(read_file(dir.file("y")), "abc");
  EXPECT_FALSE(std::filesystem::exists(dir.file("y.tmp")));
  EXPECT_EQ(error_of([&] { read_file_capped(dir.file("y"), 2); }).kind(), ErrorKind::Invalid);
}

}  // namespace
}  // namespace galleon::signing
