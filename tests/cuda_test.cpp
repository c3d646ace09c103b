// The CUDA backend against the CPU, bit for bit: the logits of stories260K and of synthetic
// models of every tensor type, evaluated as one prefill batch, token by token and in batches of
// 7, must equal the CPU Session's logits exactly. Built as cuda_test with -DGALLEON_CUDA=ON
// (without a GPU or driver the comparisons skip and the error path is checked instead), and in
// every build as cuda_host_test, on session.cu compiled for the CPU (tests/cuda_host).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "runtime/canon_math.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_testing.h"
#include "runtime/engine.h"
#include "runtime/error.h"
#include "runtime/gguf.h"
#include "runtime/kernels.h"
#include "runtime/synth.h"
#include "tests/kernel_data.h"
#include "tests/synth_cases.h"
#include "tests/test_support.h"

namespace galleon {
namespace {

using testing::bin_path;
using testing::run_cmd;
using testing::shared_path;

#define GALLEON_REQUIRE_GPU()                                                   \
  do {                                                                           \
    std::string why;                                                             \
    if (cuda::device_count(&why) == 0)                                           \
      GTEST_SKIP() << "no CUDA GPU here (" << why << "): GPU comparisons skipped"; \
  } while (0)

// Token counts and the attention shapes' weight types: on a GPU; on the host CUDA runtime
// (cuda_host_test, docs/cuda.md: every GPU thread a fiber on one CPU core) shorter sequences,
// that still fill more than one 64-row K tile and more than one prompt tile of each matmul
// path, and one weight type for the attention shapes (the synthetic cases cover every type).
#if defined(GALLEON_CUDA_HOST_TEST)
constexpr int kStoryTokens = 30, kSynthTokens = 48, kGroupTokens = 70, kLongPromptTokens = 530;
constexpr GgmlType kGroupTypes[] = {GgmlType::Q4_0};
#else
constexpr int kStoryTokens = 80, kSynthTokens = 70, kGroupTokens = 150, kLongPromptTokens = 700;
constexpr GgmlType kGroupTypes[] = {GgmlType::F32, GgmlType::Q4_0};
#endif

// The two sides of every comparison: the CPU (scalar path, one thread) and GPU 0.
std::unique_ptr<Evaluator> cpu_evaluator(const LoadedModel& m) {
  ComputeOptions cpu;
  cpu.n_threads = 1;
  return make_evaluator(*m.model, cpu, 0);
}
std::unique_ptr<Evaluator> gpu_evaluator(const LoadedModel& m) {
  ComputeOptions gpu;
  gpu.device = parse_device("cuda:0");
  return make_evaluator(*m.model, gpu, 0);
}

// All logits rows of `toks`, evaluated `batch` tokens per call.
std::vector<float> all_logits(Evaluator& ev, const std::vector<int32_t>& toks, size_t batch) {
  std::vector<float> rows, logits;
  for (size_t i = 0; i < toks.size(); i += batch) {
    std::vector<int32_t> b(toks.begin() + long(i), toks.begin() + long(std::min(toks.size(), i + batch)));
    ev.eval(b, logits);
    rows.insert(rows.end(), logits.begin(), logits.end());
  }
  return rows;
}

// Compares CPU (scalar path, one thread, one batch) and CUDA (whole, 1, 7 per call) bits.
void expect_cuda_equals_cpu(const LoadedModel& m, const std::vector<int32_t>& toks,
                            const std::string& what) {
  const std::vector<float> ref = all_logits(*cpu_evaluator(m), toks, toks.size());
  for (size_t batch : {toks.size(), size_t(1), size_t(7)}) {
    const std::vector<float> got = all_logits(*gpu_evaluator(m), toks, batch);
    ASSERT_EQ(got.size(), ref.size());
    size_t first = 0;
    while (first < ref.size() && std::memcmp(&ref[first], &got[first], 4) == 0) ++first;
    EXPECT_EQ(first, ref.size()) << what << " batch " << batch << ": first differing logit "
                                 << first << " (row " << first / size_t(m.model->hparams().n_vocab)
                                 << "): cpu " << ref[first] << " cuda " << got[first];
  }
}

// The rows `galleon run` asks for: the first part of the tokens with no row (Rows::None), then
// calls of 5 tokens with the last row only (Rows::Last), then single tokens; CPU and CUDA
// must give the same rows. (Which rows are computed is the session's choice, the same for
// every kernel path: the defaults check it.)
std::vector<float> asked_rows(Evaluator& ev, const std::vector<int32_t>& toks) {
  std::vector<float> rows, logits;
  const size_t none = toks.size() / 3, last_end = toks.size() - toks.size() / 4;
  ev.eval({toks.begin(), toks.begin() + long(none)}, logits, Evaluator::Rows::None);
  EXPECT_TRUE(logits.empty());
  for (size_t i = none; i < toks.size();) {
    const size_t n = i < last_end ? std::min<size_t>(5, last_end - i) : 1;
    ev.eval({toks.begin() + long(i), toks.begin() + long(i + n)}, logits, Evaluator::Rows::Last);
    rows.insert(rows.end(), logits.begin(), logits.end());
    i += n;
  }
  return rows;
}

void expect_asked_rows_equal_cpu(const LoadedModel& m, const std::vector<int32_t>& toks,
                                 const std::string& what) {
  const std::vector<float> ref = asked_rows(*cpu_evaluator(m), toks);
  const std::vector<float> got = asked_rows(*gpu_evaluator(m), toks);
  ASSERT_EQ(got.size(), ref.size()) << what;
  EXPECT_EQ(0, std::memcmp(ref.data(), got.data(), ref.size() * 4)) << what << ": asked rows differ";
}

// Whether one of session.cu's opt-in settings is set (the setting tests of tests/CMakeLists.txt,
// bench/gpu-check.sh): each changes a prompt path, which then runs in the default comparisons.
bool opt_in_setting() {
  for (const char* var : {"GALLEON_CUDA_MMA", "GALLEON_CUDA_PLAIN", "GALLEON_CUDA_ATTN_COLUMNS",
                          "GALLEON_CUDA_ATTN_ROWS"}) {
    const char* v = std::getenv(var);
    if (v != nullptr && *v != '\0') return true;
  }
  return false;
}

// The default kernels, then each with one of its prompt paths off (read when a session is
// made): GALLEON_CUDA_GEMM=0 (no prompt tiles: the one-lane kernels) and
// GALLEON_CUDA_ATTN_TILES=0 (attention scores without K tiles or rows). The second part only
// without an opt-in setting: switching off the path a setting changes leaves the same kernels
// as without the setting, and switching off the other changes nothing of the setting's path
// (the attention settings take either matmul path, the matmul settings either attention).
void expect_cuda_equals_cpu_on_every_path(const LoadedModel& m, const std::vector<int32_t>& toks,
                                          const std::string& what) {
  expect_cuda_equals_cpu(m, toks, what);
  expect_asked_rows_equal_cpu(m, toks, what);
  if (opt_in_setting()) return;
  for (const char* var : {"GALLEON_CUDA_GEMM", "GALLEON_CUDA_ATTN_TILES"}) {
    setenv(var, "0", 1);
    expect_cuda_equals_cpu(m, toks, what + " (" + var + "=0)");
    unsetenv(var);
  }
}

// The kernels alone, on random data with special values (tests/kernel_data.h), against the
// scalar reference: a mismatch here points at a kernel's arithmetic, one only in the forward
// pass tests below at the orchestration. Both matmul paths: the lanes, and the prompt tiles
// (tensor cores for the quantized types, shared-memory tiles for the plain ones).
TEST(CudaKernels, MatmulMatchesRefDot) {
  GALLEON_REQUIRE_GPU();
  std::mt19937 rng(21);
  const kern::Ops& ref = kern::ops(kern::Isa::Scalar);
  for (cuda::MatmulPath path : {cuda::MatmulPath::Lanes, cuda::MatmulPath::Tiles})
    for (GgmlType t : testing::kernel_data::kTypes)
      for (int64_t blocks : {1, 31, 33, 70}) {
        // Plain types: also a row length that is no multiple of 4 (rows without vector loads).
        const int64_t be = type_traits(t)->block_elems;
        const int64_t n = be == 1 ? 32 * blocks + (blocks == 33 ? 5 : 0) : blocks * be;
        // One token (the decoding tile), and partial prompt tiles of rows and tokens.
        const int64_t rows = 19, ntok = blocks == 1 ? 1 : blocks == 70 ? 37 : 6;
        const std::vector<uint8_t> w = testing::kernel_data::make_weights(rng, t, n, rows);
        const size_t arb = kern::act_row_bytes(t, n);
        std::vector<uint8_t> act(arb * size_t(ntok));
        for (int64_t k = 0; k < ntok; ++k) {
          const auto x = testing::kernel_data::make_activations(rng, n, k % 2 == 1);
          ref.quantize_act(t, x.data(), act.data() + size_t(k) * arb, n);
        }
        const std::vector<float> got = cuda::testing::matmul(t, n, rows, w, act, ntok, path);
        for (int64_t k = 0; k < ntok; ++k)
          for (int64_t r = 0; r < rows; ++r) {
            const float want = kern::ref_dot(t, n, w.data() + size_t(r) * (w.size() / size_t(rows)),
                                             act.data() + size_t(k) * arb);
            const float g = got[size_t(k * rows + r)];
            ASSERT_EQ(0, std::memcmp(&want, &g, 4))
                << type_name(t) << (path == cuda::MatmulPath::Tiles ? " (tiles)" : "")
                << " n " << n << " token " << k << " row " << r << ": cpu " << want
                << " cuda " << g;
          }
      }
}

TEST(CudaKernels, ActivationQuantizationMatchesScalar) {
  GALLEON_REQUIRE_GPU();
  std::mt19937 rng(22);
  const kern::Ops& ref = kern::ops(kern::Isa::Scalar);
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_K}) {
    const int64_t n = 1024, ntok = 9;
    std::vector<float> x;
    for (int64_t k = 0; k < ntok; ++k) {
      const auto row = testing::kernel_data::make_activations(rng, n, k % 2 == 0);
      x.insert(x.end(), row.begin(), row.end());
    }
    const size_t arb = kern::act_row_bytes(t, n);
    std::vector<uint8_t> want(arb * size_t(ntok));
    for (int64_t k = 0; k < ntok; ++k)
      ref.quantize_act(t, x.data() + k * n, want.data() + size_t(k) * arb, n);
    EXPECT_EQ(cuda::testing::quantize(t, x, n, ntok), want) << type_name(t);
  }
}

TEST(CudaKernels, ExpAndSiluMatchCanon) {
  GALLEON_REQUIRE_GPU();
  std::mt19937 rng(23);
  std::vector<float> x;
  for (uint32_t s : testing::kernel_data::kSpecial) {
    float f;
    std::memcpy(&f, &s, 4);
    x.push_back(f);
    x.push_back(-f);
  }
  for (int i = 0; i < 100000; ++i) x.push_back(std::uniform_real_distribution<float>(-110, 95)(rng));
  for (int i = 0; i < 50000; ++i) {
    const uint32_t u = uint32_t(rng());
    float f;
    std::memcpy(&f, &u, 4);
    x.push_back(f);
  }
  const std::vector<float> e = cuda::testing::map(0, x), s = cuda::testing::map(1, x);
  for (size_t i = 0; i < x.size(); ++i) {
    const float we = canon::expf(x[i]), ws = canon::silu(x[i]);
    if (we != we) {  // NaN payloads of non-dot results may differ (docs/arithmetic.md)
      EXPECT_NE(e[i], e[i]) << x[i];
    } else {
      ASSERT_EQ(0, std::memcmp(&we, &e[i], 4)) << "expf(" << x[i] << "): cpu " << we << " cuda " << e[i];
    }
    if (ws != ws) {
      EXPECT_NE(s[i], s[i]) << x[i];
    } else {
      ASSERT_EQ(0, std::memcmp(&ws, &s[i], 4)) << "silu(" << x[i] << "): cpu " << ws << " cuda " << s[i];
    }
  }
}

TEST(Cuda, NoGpuIsAClearError) {
  std::string why;
  if (cuda::device_count(&why) > 0) GTEST_SKIP() << "a GPU is present";
  const std::string model = shared_path("models/stories260K/stories260K.gguf");
  GALLEON_REQUIRE_SHARED(model);
  LoadedModel m = load_model(model);
  ComputeOptions gpu;
  gpu.device = parse_device("cuda");
  try {
    make_evaluator(*m.model, gpu, 0);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Unsupported);
    EXPECT_NE(e.message().find("CUDA"), std::string::npos) << e.message();
  }
  auto r = run_cmd({bin_path("galleon-engine"), "run", model, "-p", "Once", "--device", "cuda"});
  EXPECT_EQ(r.exit_code, 8) << r.err;
  EXPECT_NE(r.err.find("CUDA"), std::string::npos) << r.err;
}

TEST(Cuda, Stories260KMatchesCpu) {
  GALLEON_REQUIRE_GPU();
  const std::string model = shared_path("models/stories260K/stories260K.gguf");
  GALLEON_REQUIRE_SHARED(model);
  LoadedModel m = load_model(model);
  std::vector<int32_t> toks = m.tokenizer->encode(
      "Once upon a time, there was a little girl named Lily. She loved to play outside.", true,
      false);
  const int64_t n_vocab = m.model->hparams().n_vocab;
  for (int i = 0; i < kStoryTokens; ++i) toks.push_back(int32_t((i * 97 + 5) % n_vocab));
  expect_cuda_equals_cpu_on_every_path(m, toks, "stories260K");
}

// A session reset (Evaluator::reset, as llama_bench's repetitions) gives again the bits of a new
// one: a prompt's rows, then decoding steps (their CUDA graph made before the reset, replayed
// after it), both times.
TEST(Cuda, ResetSessionGivesTheBitsOfANewOne) {
  GALLEON_REQUIRE_GPU();
  const std::string model = shared_path("models/stories260K/stories260K.gguf");
  GALLEON_REQUIRE_SHARED(model);
  LoadedModel m = load_model(model);
  const std::vector<int32_t> toks = testing::synth_tokens(40, m.model->hparams().n_vocab);
  const std::vector<int32_t> prompt(toks.begin(), toks.begin() + 30);
  auto run = [&](Evaluator& ev) {
    std::vector<float> rows, logits;
    ev.eval(prompt, logits);
    rows = logits;
    for (size_t i = prompt.size(); i < toks.size(); ++i) {
      ev.eval({toks[i]}, logits);
      rows.insert(rows.end(), logits.begin(), logits.end());
    }
    return rows;
  };
  const std::unique_ptr<Evaluator> ev = gpu_evaluator(m);
  const std::vector<float> first = run(*ev);
  ev->reset();
  EXPECT_TRUE(run(*ev) == first) << "after reset";
  EXPECT_TRUE(run(*gpu_evaluator(m)) == first) << "a new session";
  EXPECT_TRUE(run(*cpu_evaluator(m)) == first) << "the CPU";
}

using testing::SynthCase;

class CudaSynth : public ::testing::TestWithParam<SynthCase> {};

TEST_P(CudaSynth, MatchesCpu) {
  GALLEON_REQUIRE_GPU();
  const SynthCase c = GetParam();
  testing::TempDir dir;
  const SynthSpec spec = testing::synth_case_spec(c);
  LoadedModel m = testing::write_and_load(spec, dir);
  const std::vector<int32_t> toks = testing::synth_tokens(kSynthTokens, spec.n_vocab);
  expect_cuda_equals_cpu_on_every_path(m, toks, std::string(c.arch) + " " + type_name(c.type));
}

INSTANTIATE_TEST_SUITE_P(AllTypes, CudaSynth, testing::all_synth_cases(),
                         testing::synth_case_name);

// Attention scores in global scratch: the one-head kernel keeps them there when n_ctx of them
// do not fit in shared memory with the lanes (48 KiB), the K-tile kernel when the prompt's
// do not (TinyLlama: 8 query heads per KV head, more than 2816 positions on an H100), or with
// GALLEON_CUDA_ATTN_SCRATCH=1, which gives its scratch path the short prompts of this test.
TEST(Cuda, LongContextScoresInGlobalMemoryMatchCpu) {
  GALLEON_REQUIRE_GPU();
  testing::TempDir dir;
  SynthSpec spec;
  spec.type = spec.embd_type = GgmlType::Q4_0;
  spec.n_ctx = 16384;  // 64 KiB of scores per head (head dim 64, 2 query heads per KV head)
  LoadedModel m = testing::write_and_load(spec, dir);
  const std::vector<int32_t> toks = testing::synth_tokens(kGroupTokens, spec.n_vocab);
  expect_cuda_equals_cpu_on_every_path(m, toks, "Q4_0, n_ctx 16384");
  setenv("GALLEON_CUDA_ATTN_SCRATCH", "1", 1);
  expect_cuda_equals_cpu(m, toks, "Q4_0, n_ctx 16384, GALLEON_CUDA_ATTN_SCRATCH=1");
  unsetenv("GALLEON_CUDA_ATTN_SCRATCH");
}

// Weights of two types in a layer, as llama.cpp's Q4_K_M: V and the FFN down projection in
// Q6_K, the others in Q4_K. Q and K then go through the prompt tiles in one launch (uploaded
// together), V in its own; gate and up together.
TEST(Cuda, MixedWeightTypesMatchCpu) {
  GALLEON_REQUIRE_GPU();
  testing::TempDir dir;
  SynthSpec spec;
  spec.type = spec.embd_type = GgmlType::Q4_K;
  spec.v_down_type = GgmlType::Q6_K;
  LoadedModel m = testing::write_and_load(spec, dir);
  const std::vector<int32_t> toks = testing::synth_tokens(kSynthTokens, spec.n_vocab);
  expect_cuda_equals_cpu_on_every_path(m, toks, "Q4_K with V and down in Q6_K");
}

// The K-tile kernel's shared memory past the default 48 KiB (cudaFuncSetAttribute, up to half an
// SM's): with 8 query heads per KV head and head dim 64 (TinyLlama's attention shape), the
// lanes of the 8 heads' trees (67 KiB); then the same with 48 KiB as on GPUs with less shared
// memory (GALLEON_CUDA_ATTN_SHARED_KIB): the scores of 530 positions (42 KiB with the K tile)
// still fit, the trees go 5 heads, then 3. One batch: the prompt's.
TEST(Cuda, LongPromptScoresPastTheDefaultSharedMemoryMatchCpu) {
  GALLEON_REQUIRE_GPU();
  testing::TempDir dir;
  SynthSpec spec;
  spec.type = spec.embd_type = GgmlType::Q8_0;
  spec.n_embd = 512;
  spec.n_head = 8;
  spec.n_head_kv = 1;
  spec.n_layer = 1;
  spec.n_ff = 256;
  spec.n_ctx = 1024;
  LoadedModel m = testing::write_and_load(spec, dir);
  const std::vector<int32_t> toks = testing::synth_tokens(kLongPromptTokens, spec.n_vocab);
  const std::vector<float> ref = all_logits(*cpu_evaluator(m), toks, toks.size());
  for (const char* kib : {"", "48"}) {
    setenv("GALLEON_CUDA_ATTN_SHARED_KIB", kib, 1);
    const std::vector<float> got = all_logits(*gpu_evaluator(m), toks, toks.size());
    ASSERT_EQ(got.size(), ref.size());
    size_t first = 0;
    while (first < ref.size() && std::memcmp(&ref[first], &got[first], 4) == 0) ++first;
    EXPECT_EQ(first, ref.size()) << "GALLEON_CUDA_ATTN_SHARED_KIB=" << kib
                                 << ": first differing logit " << first << " (row "
                                 << first / size_t(spec.n_vocab) << ")";
  }
  unsetenv("GALLEON_CUDA_ATTN_SHARED_KIB");
}

// Query heads per KV head of 1 to 8 (the K-tile attention serves 2, 3, 4 or 8 heads per block,
// and one head per block for the other group sizes; GALLEON_CUDA_ATTN_ROWS's kernel every group
// of 1 to 8), head dims 32, 64, 80, 96 and 128 (above 64: no K tiles, and at most 16 rows for
// GALLEON_CUDA_ATTN_ROWS; 80 is Phi-2's, 128 Llama-7B's); the synthetic cases above have groups
// of 2 and head dims of 64.
TEST(Cuda, AttentionGroupShapesMatchCpu) {
  GALLEON_REQUIRE_GPU();
  struct Shape {
    int64_t n_embd, n_head, n_head_kv;
  };
  for (const Shape sh : {Shape{128, 2, 2}, Shape{192, 3, 1}, Shape{256, 8, 2}, Shape{384, 6, 1},
                         Shape{256, 8, 1}, Shape{192, 2, 1}, Shape{160, 2, 2}, Shape{256, 2, 1},
                         Shape{160, 5, 1}, Shape{224, 7, 1}, Shape{384, 3, 1}})
    for (GgmlType type : kGroupTypes) {
      testing::TempDir dir;
      SynthSpec spec;
      spec.type = spec.embd_type = type;
      spec.n_embd = sh.n_embd;
      spec.n_head = sh.n_head;
      spec.n_head_kv = sh.n_head_kv;
      LoadedModel m = testing::write_and_load(spec, dir);
      const std::vector<int32_t> toks = testing::synth_tokens(kGroupTokens, spec.n_vocab);
      expect_cuda_equals_cpu_on_every_path(
          m, toks, std::string(type_name(type)) + " n_embd " + std::to_string(sh.n_embd) +
                       " heads " + std::to_string(sh.n_head) + "/" + std::to_string(sh.n_head_kv));
    }
}

}  // namespace
}  // namespace galleon
