// High-level engine operations shared by galleon-engine and the galleon CLI: load a model,
// generate, score. Logits fingerprint: sha256 of the little-endian f32 logits rows the
// operation evaluates, in order (docs/arithmetic.md section 10): generate evaluates the last
// prompt position's row, then one row per generated token except the last; score every row.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/gguf.h"
#include "runtime/kernels.h"
#include "runtime/model.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"

namespace galleon {

struct LoadedModel {
  std::unique_ptr<GgufFile> file;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

// Opens a GGUF file (or a GGUF stored at [offset, offset+size) inside another file) and builds
// model and tokenizer, with the image mapped or read into memory (Residence). Errors name the
// file.
LoadedModel load_model(const std::string& path, uint64_t offset = 0, uint64_t size = 0,
                       Residence where = Residence::Mapped);

struct ComputeOptions {
  int n_threads = 0;  // 0: all online CPUs
  kern::Isa isa = kern::Isa::Scalar;
  int64_t max_batch = 256;  // prompt tokens evaluated per call (never changes results)
  Device device;            // cpu (n_threads, isa) or a CUDA GPU; never changes results
};
// GALLEON_ISA (or the best path) and the CPU count.
ComputeOptions default_compute_options();

// A Session on the CPU or a CUDA session, by c.device, with a context of n_ctx tokens (0: the
// model's). Error(Unsupported) when the device is not available (no CUDA in this build, no GPU,
// no driver).
std::unique_ptr<Evaluator> make_evaluator(const Model& model, const ComputeOptions& c,
                                          int64_t n_ctx);

struct GenerateRequest {
  std::vector<int32_t> prompt_tokens;  // already tokenized (BOS included when wanted)
  int32_t max_tokens = 256;
  SamplerParams sampling;
  bool ignore_eos = false;
  ComputeOptions compute;
};

struct GenerateResult {
  std::vector<int32_t> prompt_tokens;
  std::vector<int32_t> tokens;  // generated
  std::string text;             // decoded generated tokens
  std::string logits_sha256;
  double prompt_tps = 0;
  double generate_tps = 0;
};

// Streams each generated token's text to on_text (may be empty) as it is produced.
GenerateResult generate(const LoadedModel& m, const GenerateRequest& req,
                        const std::function<void(const std::string&)>& on_text);

struct ScoreResult {
  int64_t n_tokens = 0;  // tokens in the sequence (BOS included)
  double nll = 0;        // natural log, summed over tokens 1 .. n-1
  double ppl = 0;        // exp(nll / (n - 1))
  std::string logits_sha256;
  std::vector<int32_t> argmax;  // most likely next token after each position
};

ScoreResult score(const LoadedModel& m, const std::vector<int32_t>& tokens,
                  const ComputeOptions& compute);

// Hashes logits rows as little-endian f32.
void hash_logits(class Sha256& h, const float* logits, size_t n);

}  // namespace galleon
