#include "signing/keys.h"

#include <openssl/pem.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "runtime/error.h"
#include "signing/encoding.h"
#include "signing/files.h"
#include "signing/openssl_util.h"
#include "signing/sha256.h"

namespace galleon::signing {

using detail::PkeyPtr;

namespace {

constexpr uint64_t kMaxKeyFile = 16 * 1024;

std::string_view as_chars(const unsigned char* p, size_t n) {
  return std::string_view(reinterpret_cast<const char*>(p), n);
}

bool is_valid_comment(std::string_view comment) {
  return std::none_of(comment.begin(), comment.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

PkeyPtr public_pkey(const RawPublicKey& raw) {
  PkeyPtr key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, raw.data(), raw.size()));
  if (!key) detail::throw_openssl(ErrorKind::Invalid, "not a valid Ed25519 public key");
  return key;
}

std::string octal_mode(mode_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

}  // namespace

bool is_key_id(std::string_view text) { return is_lower_hex(text, 16); }

std::string PublicKey::key_id() const {
  return sha256_hex(as_chars(raw.data(), raw.size())).substr(0, 16);
}

std::string PublicKey::to_line() const {
  std::string line = std::string(kPublicKeyPrefix) + " " + base64_encode(as_chars(raw.data(), raw.size()));
  if (!comment.empty()) line += " " + comment;
  return line + "\n";
}

bool PublicKey::verify(std::string_view message, const RawSignature& signature) const {
  PkeyPtr key = public_pkey(raw);
  detail::MdCtxPtr ctx = detail::new_md_ctx();
  if (EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1)
    detail::throw_openssl(ErrorKind::Internal, "EVP_DigestVerifyInit");
  int rc = EVP_DigestVerify(ctx.get(), signature.data(), signature.size(),
                            reinterpret_cast<const unsigned char*>(message.data()), message.size());
  detail::drain_openssl_errors();  // a failed verification leaves errors queued
  return rc == 1;
}

PublicKey parse_public_key(std::string_view text, std::string_view origin) {
  auto invalid = [&](std::string_view why) {
    return Error(ErrorKind::Invalid, std::string(origin) + ": " + std::string(why));
  };
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  if (text.find('\n') != std::string_view::npos)
    throw invalid("a public key file holds exactly one line");
  std::string prefix = std::string(kPublicKeyPrefix) + " ";
  if (text.substr(0, prefix.size()) != prefix)
    throw invalid("expected a line starting with \"" + prefix + "\"");
  text.remove_prefix(prefix.size());
  size_t space = text.find(' ');
  std::string_view b64 = text.substr(0, space);
  std::string_view comment = space == std::string_view::npos ? "" : text.substr(space + 1);
  std::string raw = base64_decode(b64, std::string(origin) + ": key");
  if (raw.size() != 32)
    throw invalid("key: expected 32 bytes of Ed25519 public key, got " + std::to_string(raw.size()));
  if (!is_valid_comment(comment)) throw invalid("comment holds control characters");
  PublicKey key;
  std::copy(raw.begin(), raw.end(), key.raw.begin());
  key.comment = std::string(comment);
  public_pkey(key.raw);  // OpenSSL accepts it
  return key;
}

PublicKey load_public_key(const std::string& path) {
  return parse_public_key(read_file_capped(path, kMaxKeyFile), path);
}

void save_public_key(const std::string& path, const PublicKey& key) {
  write_file_exclusive(path, key.to_line(), 0644);
}

struct PrivateKey::Impl {
  PkeyPtr pkey;
};

PrivateKey::PrivateKey(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PrivateKey::~PrivateKey() = default;
PrivateKey::PrivateKey(PrivateKey&&) noexcept = default;
PrivateKey& PrivateKey::operator=(PrivateKey&&) noexcept = default;

PrivateKey PrivateKey::generate() {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!key) detail::throw_openssl(ErrorKind::Internal, "Ed25519 key generation");
  return PrivateKey(std::make_unique<Impl>(Impl{std::move(key)}));
}

PrivateKey PrivateKey::from_pem(std::string_view pem, std::string_view origin) {
  detail::BioPtr bio = detail::memory_bio(pem);
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) detail::throw_openssl(ErrorKind::Invalid, std::string(origin) + ": not a PEM private key");
  if (EVP_PKEY_get_id(key.get()) != EVP_PKEY_ED25519)
    throw Error(ErrorKind::Invalid, std::string(origin) + ": not an Ed25519 private key");
  return PrivateKey(std::make_unique<Impl>(Impl{std::move(key)}));
}

PrivateKey PrivateKey::load(const std::string& path) {
  UniqueFd fd = open_read(path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw Error(ErrorKind::Io, path + ": cannot stat");
  if (st.st_mode & 077)
    throw Error(ErrorKind::Untrusted, path + ": private key is accessible by group or others (mode " +
                                          octal_mode(st.st_mode) + ", expected 0600)");
  return from_pem(read_file_capped(path, kMaxKeyFile), path);
}

std::string PrivateKey::to_pem() const {
  detail::BioPtr bio = detail::memory_bio();
  if (PEM_write_bio_PrivateKey(bio.get(), impl_->pkey.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
    detail::throw_openssl(ErrorKind::Internal, "PEM_write_bio_PrivateKey");
  return detail::bio_contents(bio.get());
}

void PrivateKey::save(const std::string& path) const { write_file_exclusive(path, to_pem(), 0600); }

PublicKey PrivateKey::public_key(std::string comment) const {
  PublicKey out;
  size_t len = out.raw.size();
  if (EVP_PKEY_get_raw_public_key(impl_->pkey.get(), out.raw.data(), &len) != 1 || len != out.raw.size())
    detail::throw_openssl(ErrorKind::Internal, "EVP_PKEY_get_raw_public_key");
  if (!is_valid_comment(comment)) throw Error(ErrorKind::Usage, "key comment holds control characters");
  out.comment = std::move(comment);
  return out;
}

RawSignature PrivateKey::sign(std::string_view message) const {
  detail::MdCtxPtr ctx = detail::new_md_ctx();
  if (EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, impl_->pkey.get()) != 1)
    detail::throw_openssl(ErrorKind::Internal, "EVP_DigestSignInit");
  RawSignature sig{};
  size_t len = sig.size();
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, reinterpret_cast<const unsigned char*>(message.data()),
                     message.size()) != 1 ||
      len != sig.size())
    detail::throw_openssl(ErrorKind::Internal, "EVP_DigestSign");
  return sig;
}

KeyFiles generate_key_files(const std::string& dir, const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == ".." ||
      !is_valid_comment(name))
    throw Error(ErrorKind::Usage, "key name '" + name + "': expected a plain file name");
  KeyFiles files;
  files.private_path = (std::filesystem::path(dir) / (name + ".key")).string();
  files.public_path = (std::filesystem::path(dir) / (name + ".pub")).string();
  if (std::filesystem::exists(files.public_path))
    throw Error(ErrorKind::Usage, files.public_path + ": already exists (not overwritten)");
  PrivateKey key = PrivateKey::generate();
  key.save(files.private_path);
  files.public_key = key.public_key(name);
  save_public_key(files.public_path, files.public_key);
  return files;
}

}  // namespace galleon::signing
