// Where a model is evaluated: the CPU Session (runtime/model.h) or the CUDA backend
// (runtime/cuda/, docs/cuda.md). Both keep the same contract and give the same logits bits.
// This header includes no CUDA headers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace galleon {

struct Device {
  enum class Kind { Cpu, Cuda };
  Kind kind = Kind::Cpu;
  int index = 0;  // GPU ordinal for Cuda
};

// "cpu", "cuda" (= cuda:0) or "cuda:N"; anything else is Error(Usage).
Device parse_device(const std::string& text);
// "cpu" or "cuda:N".
std::string device_name(const Device& d);

// Which logits rows an evaluation of n tokens computes: all n, the last token's, or none (the
// positions are still evaluated and cached).
enum class LogitRows { All, Last, None };

// Evaluates tokens against a KV cache (the contract of Session::eval: n rows of n_vocab logits
// for the positions n_past .. n_past + n - 1, only the last row with Rows::Last, none with
// Rows::None; any split into calls gives the same bits).
class Evaluator {
 public:
  using Rows = LogitRows;
  virtual ~Evaluator() = default;
  void eval(const std::vector<int32_t>& tokens, std::vector<float>& logits,
            Rows rows = Rows::All) {
    do_eval(tokens, logits, rows);
  }
  virtual int64_t n_ctx() const = 0;
  // Back to position 0 (the cached positions are forgotten; buffers and tables are kept), as a
  // new evaluator of the same model: the same bits from here on.
  virtual void reset() = 0;

 protected:
  virtual void do_eval(const std::vector<int32_t>& tokens, std::vector<float>& logits,
                       Rows rows) = 0;
};

}  // namespace galleon
