// The synthetic models every backend is checked with: each runnable tensor type (llama),
// qwen2 (Q/K/V biases, NeoX RoPE) for three of them, and qwen3 (per-head Q/K norms, NeoX RoPE,
// heads of 128 wider than n_embd / n_head, as Qwen3's) for two, and phi3 (fused Q/K/V and
// gate/up matrices, NeoX RoPE, 8 heads of 96 without grouping) for one, and one of each other
// architecture (exaone's with every attention bias). Used by model_test and cuda_test.
#pragma once

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "runtime/engine.h"
#include "runtime/ggml_type.h"
#include "runtime/gguf.h"
#include "runtime/synth.h"
#include "tests/test_support.h"

namespace galleon::testing {

struct SynthCase {
  const char* arch;
  GgmlType type;
};

inline auto all_synth_cases() {
  return ::testing::Values(
      SynthCase{"llama", GgmlType::F32}, SynthCase{"llama", GgmlType::F16},
      SynthCase{"llama", GgmlType::BF16}, SynthCase{"llama", GgmlType::Q8_0},
      SynthCase{"llama", GgmlType::Q4_0}, SynthCase{"llama", GgmlType::Q4_1},
      SynthCase{"llama", GgmlType::Q5_0}, SynthCase{"llama", GgmlType::Q5_1},
      SynthCase{"llama", GgmlType::Q4_K}, SynthCase{"llama", GgmlType::Q5_K},
      SynthCase{"llama", GgmlType::Q6_K}, SynthCase{"llama", GgmlType::Q2_K},
      SynthCase{"llama", GgmlType::Q3_K}, SynthCase{"llama", GgmlType::IQ4_NL},
      SynthCase{"llama", GgmlType::IQ4_XS}, SynthCase{"qwen2", GgmlType::Q8_0},
      SynthCase{"qwen2", GgmlType::Q4_K}, SynthCase{"qwen2", GgmlType::F16},
      SynthCase{"qwen3", GgmlType::Q4_0}, SynthCase{"qwen3", GgmlType::BF16},
      SynthCase{"phi3", GgmlType::Q4_K}, SynthCase{"gemma", GgmlType::Q8_0},
      SynthCase{"gemma2", GgmlType::Q4_K}, SynthCase{"gemma3", GgmlType::Q4_0},
      SynthCase{"granite", GgmlType::Q6_K}, SynthCase{"olmo2", GgmlType::Q5_0},
      SynthCase{"smollm3", GgmlType::Q4_1}, SynthCase{"exaone", GgmlType::Q5_1},
      SynthCase{"exaone4", GgmlType::Q8_0});
}

inline std::string synth_case_name(const ::testing::TestParamInfo<SynthCase>& info) {
  return std::string(info.param.arch) + "_" + type_name(info.param.type);
}
// How GoogleTest prints a case (--gtest_list_tests, failures): its name, not its bytes.
inline void PrintTo(const SynthCase& c, std::ostream* os) {
  *os << c.arch << " " << type_name(c.type);
}

// The spec of a case: all matrices and the embedding of its type, the output tied for Q8_0.
inline SynthSpec synth_case_spec(const SynthCase& c) {
  SynthSpec spec;
  spec.arch = c.arch;
  spec.type = c.type;
  spec.embd_type = c.type;
  spec.tied_output = c.type == GgmlType::Q8_0;
  if (spec.arch == "qwen3") spec.head_dim = 128;
  if (spec.arch == "phi3") {  // Phi-3's heads: 96 wide, one query head per KV head; LongRoPE
    spec.head_dim = 96;
    spec.n_head = spec.n_head_kv = 8;
    spec.longrope_orig_ctx = 64;  // the tests' sessions are longer: the long factors
  }
  // gemma: the output tied; windows shorter than the tests' prompts; gemma2's caps low enough
  // to bend the scores and logits; gemma3 with its global sixth layer and heads of 128.
  if (spec.arch.rfind("gemma", 0) == 0) spec.tied_output = true;
  if (spec.arch == "gemma2") {
    spec.n_swa = 7;
    spec.attn_softcap = 0.5f;
    spec.final_softcap = 2.0f;
  }
  if (spec.arch == "olmo2") spec.n_swa = 6;  // olmo2 with a window (three layers of four)
  if (spec.arch == "smollm3") spec.n_layer = 4;  // its fourth layer without RoPE
  if (spec.arch == "exaone") spec.attn_biases = true;  // every attention bias (optional there)
  if (spec.arch == "gemma3") {
    spec.n_swa = 5;
    spec.n_layer = 6;
    spec.head_dim = 128;
    spec.rope_base = 1e6f;
  }
  return spec;
}

// Writes the model of `spec` into dir (m.gguf) and loads it.
inline LoadedModel write_and_load(const SynthSpec& spec, const TempDir& dir) {
  GgufWriter w;
  make_synthetic_model(spec, w);
  w.write_file(dir.file("m.gguf"));
  return load_model(dir.file("m.gguf"));
}

// n token ids spread over a vocabulary of n_vocab.
inline std::vector<int32_t> synth_tokens(int n, int64_t n_vocab) {
  std::vector<int32_t> toks;
  for (int i = 0; i < n; ++i) toks.push_back(int32_t((i * 37 + 11) % n_vocab));
  return toks;
}

}  // namespace galleon::testing
