// Single-thread kernel speed: GEMV (decode, 1 token) in GB/s of weights streamed and GEMM
// (prefill, 64 tokens) in GFLOP/s, for a 2048x2048 matrix, per weight type and ISA path.
// Usage: kernels_bench [type ...]   (default: every runnable type)
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "runtime/ggml_type.h"
#include "runtime/kernels.h"
#include "runtime/quant.h"

using namespace galleon;

namespace {

double seconds_per_call(const std::function<void()>& f, double min_time) {
  using clock = std::chrono::steady_clock;
  f();  // warm up
  int reps = 0;
  const auto start = clock::now();
  double el = 0;
  do {
    f();
    ++reps;
    el = std::chrono::duration<double>(clock::now() - start).count();
  } while (el < min_time);
  return el / reps;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<GgmlType> types;
  for (int i = 1; i < argc; ++i) {
    auto t = type_from_name(argv[i]);
    if (!t) {
      std::fprintf(stderr, "unknown type %s\n", argv[i]);
      return 2;
    }
    types.push_back(*t);
  }
  if (types.empty())
    types = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0,
             GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
             GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q2_K,
             GgmlType::Q3_K, GgmlType::IQ4_NL, GgmlType::IQ4_XS};
  const int64_t n = 2048, rows = 2048, ntok = 64;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> xf(static_cast<size_t>(n * ntok)), wf(static_cast<size_t>(n));
  for (auto& v : xf) v = nd(rng);
  std::printf("%-6s %-7s %12s %14s\n", "type", "isa", "GEMV GB/s", "GEMM GFLOP/s");
  for (GgmlType t : types) {
    uint64_t rb = 0;
    row_bytes(t, n, &rb);
    std::vector<uint8_t> w(size_t(rb * rows));
    for (int64_t r = 0; r < rows; ++r) {
      for (auto& v : wf) v = nd(rng) * 0.02f;
      quantize_row(t, wf.data(), w.data() + size_t(r) * rb, n);
    }
    const size_t ab = kern::act_row_bytes(t, n);
    std::vector<uint8_t> act(ab * ntok);
    std::vector<float> y(size_t(rows * ntok));
    for (kern::Isa isa : {kern::Isa::Scalar, kern::Isa::Sse2, kern::Isa::Avx2, kern::Isa::Avx512,
                          kern::Isa::Neon}) {
      if (!kern::isa_available(isa)) continue;
      const kern::Ops& o = kern::ops(isa);
      for (int64_t i = 0; i < ntok; ++i) o.quantize_act(t, xf.data() + i * n, act.data() + i * ab, n);
      const double min_time = isa == kern::Isa::Scalar ? 0.05 : 0.3;
      const double gemv = seconds_per_call(
          [&] { o.matmul(t, n, w.data(), rb, 0, rows, act.data(), ab, 1, y.data(), rows); }, min_time);
      const double gemm = seconds_per_call(
          [&] { o.matmul(t, n, w.data(), rb, 0, rows, act.data(), ab, ntok, y.data(), rows); }, min_time);
      std::printf("%-6s %-7s %12.2f %14.2f\n", type_name(t), kern::isa_name(isa),
                  double(w.size()) / gemv * 1e-9, 2.0 * double(n * rows * ntok) / gemm * 1e-9);
      std::fflush(stdout);
    }
  }
  return 0;
}
