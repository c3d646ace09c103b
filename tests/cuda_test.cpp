// The CUDA backend against the CPU, bit for bit (built only with -DGALLEON_CUDA=ON): the logits
// of stories260K and of synthetic models of every tensor type, evaluated as one prefill batch,
// token by token and in batches of 7, must equal the CPU Session's logits exactly. Without a
// GPU (or driver) the comparisons skip and the error path is checked instead.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "runtime/cuda/cuda_backend.h"
#include "runtime/engine.h"
#include "runtime/error.h"
#include "runtime/gguf.h"
#include "runtime/synth.h"
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
  ComputeOptions cpu;
  cpu.n_threads = 1;
  const std::vector<float> ref = all_logits(*make_evaluator(*m.model, cpu, 0), toks, toks.size());
  ComputeOptions gpu;
  gpu.device = parse_device("cuda:0");
  for (size_t batch : {toks.size(), size_t(1), size_t(7)}) {
    const std::vector<float> got = all_logits(*make_evaluator(*m.model, gpu, 0), toks, batch);
    ASSERT_EQ(got.size(), ref.size());
    size_t first = 0;
    while (first < ref.size() && std::memcmp(&ref[first], &got[first], 4) == 0) ++first;
    EXPECT_EQ(first, ref.size()) << what << " batch " << batch << ": first differing logit "
                                 << first << " (row " << first / size_t(m.model->hparams().n_vocab)
                                 << "): cpu " << ref[first] << " cuda " << got[first];
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
  for (int i = 0; i < 80; ++i) toks.push_back(int32_t((i * 97 + 5) % m.model->hparams().n_vocab));
  expect_cuda_equals_cpu(m, toks, "stories260K");
}

using testing::SynthCase;

class CudaSynth : public ::testing::TestWithParam<SynthCase> {};

TEST_P(CudaSynth, MatchesCpu) {
  GALLEON_REQUIRE_GPU();
  const SynthCase c = GetParam();
  testing::TempDir dir;
  const SynthSpec spec = testing::synth_case_spec(c);
  GgufWriter w;
  make_synthetic_model(spec, w);
  w.write_file(dir.file("m.gguf"));
  LoadedModel m = load_model(dir.file("m.gguf"));
  std::vector<int32_t> toks;
  for (int i = 0; i < 70; ++i) toks.push_back(int32_t((i * 37 + 11) % spec.n_vocab));
  expect_cuda_equals_cpu(m, toks, std::string(c.arch) + " " + type_name(c.type));
}

INSTANTIATE_TEST_SUITE_P(AllTypes, CudaSynth, testing::all_synth_cases(),
                         testing::synth_case_name);

}  // namespace
}  // namespace galleon
