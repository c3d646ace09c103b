// libFuzzer target for the tokenizers: the fuzz input is text, encoded with parse_special off and
// on by the vocabulary named by GALLEON_FUZZ_VOCAB (a GGUF path, loaded once). Every id must be
// in range, decoding must not fail, and nothing may crash or hang. Build (repository root):
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -I. fuzz/tokenizer_fuzz.cpp \
//     runtime/tokenizer.cpp runtime/tokenizer_spm.cpp runtime/tokenizer_bpe.cpp \
//     runtime/tokenizer_wpm.cpp runtime/tokenizer_ugm.cpp runtime/unicode.cpp \
//     runtime/unicode_regex.cpp runtime/gguf.cpp runtime/ggml_type.cpp runtime/error.cpp \
//     -o tokenizer_fuzz
//   GALLEON_FUZZ_VOCAB=../shared/vocab/ggml-vocab-gpt-2.gguf ./tokenizer_fuzz -max_len=4096
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string_view>

#include "runtime/error.h"
#include "runtime/gguf.h"
#include "runtime/tokenizer.h"

namespace {

struct Loaded {
  std::unique_ptr<galleon::GgufFile> file;
  std::unique_ptr<galleon::Tokenizer> tok;
};

const Loaded& loaded() {
  static const Loaded l = [] {
    const char* path = std::getenv("GALLEON_FUZZ_VOCAB");
    if (path == nullptr) {
      std::fprintf(stderr, "set GALLEON_FUZZ_VOCAB to a vocabulary GGUF\n");
      std::abort();
    }
    Loaded r;
    try {
      r.file = galleon::GgufFile::open(path);
      r.tok = galleon::Tokenizer::from_gguf(*r.file);
    } catch (const galleon::Error& e) {
      std::fprintf(stderr, "%s\n", e.what());
      std::abort();
    }
    return r;
  }();
  return l;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const galleon::Tokenizer& tok = *loaded().tok;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (bool parse_special : {false, true}) {
    std::vector<galleon::TokenId> ids = tok.encode(text, /*add_bos=*/true, parse_special);
    for (galleon::TokenId id : ids) {
      if (id < 0 || id >= tok.n_vocab()) std::abort();
    }
    (void)tok.decode(ids);
  }
  return 0;
}
