// signing (private): RAII owners for OpenSSL handles and OpenSSL error reporting.
#pragma once

#include <openssl/bio.h>
#include <openssl/evp.h>

#include <memory>
#include <string>
#include <string_view>

#include "runtime/error.h"

namespace galleon::signing::detail {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* p) const noexcept { EVP_MD_CTX_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const noexcept { BIO_free_all(p); }
};

using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;

// The OpenSSL error queue as text (emptied), or "unknown OpenSSL error".
std::string drain_openssl_errors();

// Throws Error(kind, "<what>: <OpenSSL errors>").
[[noreturn]] void throw_openssl(ErrorKind kind, std::string_view what);

MdCtxPtr new_md_ctx();
// A read-only memory BIO over `bytes` (which must outlive it).
BioPtr memory_bio(std::string_view bytes);
// An empty writable memory BIO.
BioPtr memory_bio();
// Everything written to a memory BIO.
std::string bio_contents(BIO* bio);

}  // namespace galleon::signing::detail
