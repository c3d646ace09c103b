// libFuzzer target for the GGUF reader: any input must either parse or throw galleon::Error
// (Invalid). Build (from the repository root):
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -I. fuzz/gguf_fuzz.cpp \
//     runtime/gguf.cpp runtime/ggml_type.cpp runtime/error.cpp -o gguf_fuzz
//   ./gguf_fuzz -max_len=8192 fuzz/corpus/gguf
// The seed corpus is written by tests/gguf_test.cpp (GALLEON_WRITE_FUZZ_CORPUS=fuzz/corpus/gguf).
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "runtime/error.h"
#include "runtime/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = galleon::GgufFile::from_memory(data, size, "fuzz.gguf");
    // Walk what the reader vouched for, so that a wrong bound shows up as an ASan report.
    unsigned sum = 0;
    for (const galleon::GgufTensorInfo& t : f->tensors()) {
      const uint8_t* p = f->tensor_data(t);
      for (uint64_t k = 0; k < t.n_bytes; ++k) sum += p[k];
      if (f->find_tensor(t.name) != &t) std::abort();
    }
    for (const auto& [key, value] : f->metadata()) {
      if (f->find(key) != &value) std::abort();
      (void)f->get_u64_opt(key);
    }
    volatile unsigned sink = sum;
    (void)sink;
  } catch (const galleon::Error& e) {
    if (e.kind() != galleon::ErrorKind::Invalid) std::abort();
  }
  return 0;
}
