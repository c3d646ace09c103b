// The synthetic models every backend is checked with: each runnable tensor type (llama), and
// qwen2 (Q/K/V biases, NeoX RoPE) for three of them. Used by model_test and cuda_test.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "runtime/ggml_type.h"
#include "runtime/synth.h"

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
      SynthCase{"llama", GgmlType::Q6_K}, SynthCase{"qwen2", GgmlType::Q8_0},
      SynthCase{"qwen2", GgmlType::Q4_K}, SynthCase{"qwen2", GgmlType::F16});
}

inline std::string synth_case_name(const ::testing::TestParamInfo<SynthCase>& info) {
  return std::string(info.param.arch) + "_" + type_name(info.param.type);
}

// The spec of a case: all matrices and the embedding of its type, the output tied for Q8_0.
inline SynthSpec synth_case_spec(const SynthCase& c) {
  SynthSpec spec;
  spec.arch = c.arch;
  spec.type = c.type;
  spec.embd_type = c.type;
  spec.tied_output = c.type == GgmlType::Q8_0;
  return spec;
}

}  // namespace galleon::testing
