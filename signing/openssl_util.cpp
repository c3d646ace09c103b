#include "signing/openssl_util.h"

#include <openssl/err.h>

#include <climits>

namespace galleon::signing::detail {

std::string drain_openssl_errors() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    if (!text.empty()) text += "; ";
    text += buf;
  }
  return text.empty() ? "unknown OpenSSL error" : text;
}

void throw_openssl(ErrorKind kind, std::string_view what) {
  throw Error(kind, std::string(what) + ": " + drain_openssl_errors());
}

MdCtxPtr new_md_ctx() {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx) throw_openssl(ErrorKind::Internal, "EVP_MD_CTX_new");
  return ctx;
}

BioPtr memory_bio(std::string_view bytes) {
  if (bytes.size() > INT_MAX) throw Error(ErrorKind::Invalid, "input too large for a memory BIO");
  BioPtr bio(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
  if (!bio) throw_openssl(ErrorKind::Internal, "BIO_new_mem_buf");
  return bio;
}

BioPtr memory_bio() {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) throw_openssl(ErrorKind::Internal, "BIO_new");
  return bio;
}

std::string bio_contents(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

}  // namespace galleon::signing::detail
