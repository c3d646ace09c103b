// The engine end to end: real models through the real CLI (galleon -> galleon-engine), and
// synthetic models of every tensor type through the library, proving bit-identical logits
// across thread counts, instruction-set paths and batch splits.
#include <elf.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>

#include "runtime/cuda/cuda_backend.h"
#include "runtime/engine.h"
#include "runtime/error.h"
#include "runtime/gguf.h"
#include "runtime/sha256.h"
#include "runtime/synth.h"
#include "tests/synth_cases.h"
#include "tests/test_support.h"

namespace galleon {
namespace {

using testing::bin_path;
using testing::run_cmd;
using testing::shared_path;
using json = nlohmann::json;

const std::string kStories = "models/stories260K/stories260K.gguf";

std::vector<kern::Isa> available_isas() {
  std::vector<kern::Isa> v;
  for (auto i : {kern::Isa::Scalar, kern::Isa::Sse2, kern::Isa::Avx2, kern::Isa::Avx512,
                 kern::Isa::Neon})
    if (kern::isa_available(i)) v.push_back(i);
  return v;
}

json run_json(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {}) {
  std::vector<std::string> argv{bin_path("galleon")};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run_cmd(argv, env);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return json::parse(r.out);
}

TEST(Engine, StoriesGreedyContinuationIsExact) {
  const std::string model = shared_path(kStories);
  GALLEON_REQUIRE_SHARED(model);
  json j = run_json({"run", model, "--prompt", "Once upon a time", "--temperature", "0",
                     "--max-tokens", "32", "--json"});
  EXPECT_EQ(j["prompt_tokens"], json::parse("[1,403,407,261,378]"));
  const std::string text = j["text"];
  EXPECT_EQ(text.rfind(", there was a little girl named Lily. She loved to play outside in the park.", 0),
            0u) << text;
  EXPECT_EQ(j["tokens"].size(), 32u);
  EXPECT_EQ(j["logits_sha256"].get<std::string>().size(), 64u);
  EXPECT_GT(j["tokens_per_second"]["generate"].get<double>(), 0.0);
}

TEST(Engine, StoriesStreamsTextWithoutJson) {
  const std::string model = shared_path(kStories);
  GALLEON_REQUIRE_SHARED(model);
  auto r = run_cmd({bin_path("galleon"), "run", model, "-p", "Once upon a time", "--temperature",
                    "0", "-n", "12"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind(", there was a little girl named Lily", 0), 0u) << r.out;
}

TEST(Engine, LogitsAreIdenticalAcrossThreadsIsaAndBatching) {
  const std::string model = shared_path(kStories);
  GALLEON_REQUIRE_SHARED(model);
  std::string reference;
  json ref_tokens;
  for (kern::Isa isa : available_isas())
    for (const char* threads : {"1", "2", "3", "8"})
      for (const char* batch : {"256", "1", "3"}) {
        json j = run_json({"run", model, "--prompt", "Lily and Tom went to the park", "--seed", "7",
                           "--temperature", "0.9", "--max-tokens", "24", "--threads", threads,
                           "--batch", batch, "--json"},
                          {{"GALLEON_ISA", kern::isa_name(isa)}});
        if (reference.empty()) {
          reference = j["logits_sha256"];
          ref_tokens = j["tokens"];
        }
        EXPECT_EQ(j["logits_sha256"], reference)
            << "isa " << kern::isa_name(isa) << " threads " << threads << " batch " << batch;
        EXPECT_EQ(j["tokens"], ref_tokens);
      }
}

// The weights read into memory (the default) or mapped from the file (--mmap): the same bits,
// for run and score.
TEST(Engine, MmapFlagNeverChangesResults) {
  const std::string model = shared_path(kStories);
  GALLEON_REQUIRE_SHARED(model);
  for (const char* verb : {"run", "score"}) {
    std::vector<std::string> args = {verb, model, "--json"};
    if (std::string(verb) == "run")
      args.insert(args.end(), {"--prompt", "Lily and Tom", "--max-tokens", "16", "--temperature", "0"});
    else
      args.insert(args.end(), {"--text", "Lily and Tom went to the park."});
    const json in_memory = run_json(args);
    args.push_back("--mmap");
    const json mapped = run_json(args);
    EXPECT_EQ(in_memory["logits_sha256"], mapped["logits_sha256"]) << verb;
    EXPECT_FALSE(std::string(in_memory["logits_sha256"]).empty()) << verb;
  }
}

TEST(Engine, UnknownOrMissingIsaIsAClearError) {
  const std::string model = shared_path(kStories);
  GALLEON_REQUIRE_SHARED(model);
  auto r = run_cmd({bin_path("galleon"), "run", model, "-p", "hi", "--json"},
                   {{"GALLEON_ISA", "mmx"}});
  EXPECT_EQ(r.exit_code, 8);
  EXPECT_NE(r.err.find("GALLEON_ISA"), std::string::npos) << r.err;
#if defined(__x86_64__)
  auto n = run_cmd({bin_path("galleon"), "run", model, "-p", "hi", "--json"},
                   {{"GALLEON_ISA", "neon"}});
  EXPECT_EQ(n.exit_code, 8);
  EXPECT_NE(n.err.find("neon"), std::string::npos) << n.err;
#endif
}

TEST(Engine, ConvertedLlama2cCheckpointMatchesTheShippedGguf) {
  const std::string bin = shared_path("models/stories260K/stories260K.bin");
  const std::string tok = shared_path("models/stories260K/tok512.bin");
  const std::string model = shared_path(kStories);
  GALLEON_REQUIRE_SHARED(bin);
  GALLEON_REQUIRE_SHARED(tok);
  GALLEON_REQUIRE_SHARED(model);
  testing::TempDir dir;
  for (const char* name : {"a.gguf", "b.gguf"}) {
    auto r = run_cmd({bin_path("galleon"), "convert", bin, "--tokenizer", tok, "--out", dir.file(name)});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  EXPECT_EQ(testing::read_file(dir.file("a.gguf")), testing::read_file(dir.file("b.gguf")));
  for (const char* prompt : {"Once upon a time", "The little dog", "Lily and Tom went to the park"}) {
    std::vector<std::string> args{"--prompt", prompt, "--temperature", "0", "--max-tokens", "40", "--json"};
    auto with = [&](const std::string& m) {
      std::vector<std::string> a{"run", m};
      a.insert(a.end(), args.begin(), args.end());
      return run_json(a);
    };
    json shipped = with(model), converted = with(dir.file("a.gguf"));
    EXPECT_EQ(shipped["tokens"], converted["tokens"]) << prompt;
    EXPECT_EQ(shipped["prompt_tokens"], converted["prompt_tokens"]) << prompt;
    EXPECT_EQ(shipped["logits_sha256"], converted["logits_sha256"]) << prompt;
  }
}

TEST(Engine, ConvertRejectsATruncatedCheckpoint) {
  const std::string bin = shared_path("models/stories260K/stories260K.bin");
  const std::string tok = shared_path("models/stories260K/tok512.bin");
  GALLEON_REQUIRE_SHARED(bin);
  testing::TempDir dir;
  std::string bytes = testing::read_file(bin);
  testing::write_file(dir.file("cut.bin"), bytes.substr(0, bytes.size() / 2));
  auto r = run_cmd({bin_path("galleon"), "convert", dir.file("cut.bin"), "--tokenizer", tok,
                    "--out", dir.file("x.gguf")});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_NE(r.err.find("cut.bin"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("truncated"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.gguf")));
}

TEST(Engine, ContextLimitIsEnforced) {
  const std::string model = shared_path(kStories);  // context_length 128
  GALLEON_REQUIRE_SHARED(model);
  std::string long_prompt;
  for (int i = 0; i < 100; ++i) long_prompt += "the dog ran. ";
  auto r = run_cmd({bin_path("galleon"), "run", model, "-p", long_prompt, "--json"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_NE(r.err.find("context_length"), std::string::npos) << r.err;
  // Generation stops at the context limit instead of failing.
  json j = run_json({"run", model, "-p", "Once upon a time", "--temperature", "0", "--ignore-eos",
                     "--max-tokens", "1000", "--json"});
  EXPECT_EQ(j["prompt_tokens"].size() + j["tokens"].size(), 128u);
}

TEST(Engine, ScoreReportsNllPerplexityAndArgmax) {
  const std::string model = shared_path(kStories);
  GALLEON_REQUIRE_SHARED(model);
  const std::string text = "Once upon a time, there was a little girl named Lily.";
  json s = run_json({"score", model, "--text", text, "--argmax", "--json"});
  json t = run_json({"tokenize", model, "--text", text, "--json"});
  const size_t n = t["tokens"].size();
  EXPECT_EQ(s["n_tokens"].get<size_t>(), n);
  EXPECT_EQ(s["argmax"].size(), n);
  const double nll = s["nll"], ppl = s["ppl"];
  EXPECT_GT(nll, 0.0);
  EXPECT_NEAR(ppl, std::exp(nll / double(n - 1)), 1e-9 * ppl);
  // A trained model predicts most of its own greedy story.
  EXPECT_LT(ppl, 5.0);
  // Greedy generation's first token is the argmax after the prompt.
  json g = run_json({"run", model, "--prompt", "Once upon a time", "--temperature", "0",
                     "--max-tokens", "1", "--json"});
  json sp = run_json({"score", model, "--text", "Once upon a time", "--argmax", "--json"});
  EXPECT_EQ(g["tokens"][0], sp["argmax"].back());
  // The same text against the same model: no difference; against noise: a clear one.
  json vs = run_json({"score", model, "--text", text, "--vs", model, "--json"});
  EXPECT_EQ(vs["nll_difference"].get<double>(), 0.0);
  EXPECT_EQ(vs["model"]["logits_sha256"], s["logits_sha256"]);
}

TEST(Engine, BadModelFilesGiveClearErrors) {
  testing::TempDir dir;
  testing::write_file(dir.file("junk.gguf"), "this is not a gguf file at all");
  auto r = run_cmd({bin_path("galleon"), "run", dir.file("junk.gguf"), "-p", "x"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_NE(r.err.find("junk.gguf"), std::string::npos) << r.err;
  auto m = run_cmd({bin_path("galleon"), "run", dir.file("missing.gguf"), "-p", "x"});
  EXPECT_EQ(m.exit_code, 3);
  EXPECT_NE(m.err.find("missing.gguf"), std::string::npos) << m.err;
  auto u = run_cmd({bin_path("galleon"), "run"});
  EXPECT_EQ(u.exit_code, 2);
}

TEST(Engine, InspectAndTokenize) {
  const std::string model = shared_path(kStories);
  GALLEON_REQUIRE_SHARED(model);
  json i = run_json({"inspect", model, "--json"});
  EXPECT_EQ(i["architecture"], "llama");
  EXPECT_EQ(i["runnable"], true);
  EXPECT_EQ(i["metadata"]["llama.embedding_length"], 64);
  EXPECT_GT(i["n_params"].get<uint64_t>(), 200000u);
  json t = run_json({"tokenize", model, "--text", "Once upon a time", "--json"});
  EXPECT_EQ(t["tokens"], json::parse("[1,403,407,261,378]"));
  json nb = run_json({"tokenize", model, "--text", "Once upon a time", "--no-bos", "--json"});
  EXPECT_EQ(nb["tokens"], json::parse("[403,407,261,378]"));
}

// --device: cpu is the default and is named in --json; cuda gives the CPU's logits bits where a
// GPU is present, else a clear error (exit 8): no CUDA in this build, or no GPU/driver.
TEST(Engine, DeviceFlag) {
  const std::string model = shared_path(kStories);
  GALLEON_REQUIRE_SHARED(model);
  const std::vector<std::string> args{"run", model, "-p", "Once upon a time", "--temperature",
                                      "0", "--max-tokens", "8", "--json"};
  json cpu = run_json(args);
  EXPECT_EQ(cpu["device"], "cpu");
  std::vector<std::string> argv{bin_path("galleon")};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.insert(argv.end(), {"--device", "cuda"});
  auto r = run_cmd(argv);
  std::string why;
  if (cuda::device_count(&why) > 0) {
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json gpu = json::parse(r.out);
    EXPECT_EQ(gpu["device"], "cuda:0");
    EXPECT_EQ(gpu["logits_sha256"], cpu["logits_sha256"]);
  } else {
    EXPECT_EQ(r.exit_code, 8) << r.err;
    EXPECT_NE(r.err.find(cuda::built() ? "CUDA" : "no CUDA backend"), std::string::npos) << r.err;
  }
  argv.back() = "gpu";
  EXPECT_EQ(run_cmd(argv).exit_code, 2);
}

// session.cu behind the engine's own command line: the CUDA engine built on the host runtime
// (galleon-engine-cuda-host, tests/CMakeLists.txt) against the static CPU engine. `run` hashes
// the last prompt row and the decoded rows, `score` every prompt row; batches 1 and 7, with the
// defaults and with the prompt paths off. What bench/gpu-check.sh compares on a GPU.
TEST(Engine, CudaEngineOnTheHostRuntimeMatchesTheCpuEngine) {
  const std::string model = shared_path(kStories);
  GALLEON_REQUIRE_SHARED(model);
  const std::string text =
      "Once upon a time, there was a little girl named Lily. She loved to play outside.";
  for (const std::string verb : {"run", "score"}) {
    auto engine = [&](const std::string& bin, const std::string& device, const std::string& batch,
                      const std::map<std::string, std::string>& env) {
      std::vector<std::string> argv{bin_path(bin), verb, model, "--json", "--device", device,
                                    "--batch", batch};
      if (verb == "run")
        argv.insert(argv.end(), {"-p", text, "--temperature", "0", "--ignore-eos",
                                 "--max-tokens", "6"});
      else
        argv.insert(argv.end(), {"-t", text});
      auto r = run_cmd(argv, env);
      EXPECT_EQ(r.exit_code, 0) << bin << " " << verb << ": " << r.err;
      return r.exit_code == 0 ? json::parse(r.out) : json::object();
    };
    const json cpu = engine("galleon-engine", "cpu", "64", {});
    ASSERT_TRUE(cpu.contains("logits_sha256")) << cpu.dump();
    for (const std::string batch : {"1", "7"})
      for (const std::string paths : {"0", "1"}) {
        const json gpu = engine("galleon-engine-cuda-host", "cuda", batch,
                                {{"GALLEON_CUDA_GEMM", paths}, {"GALLEON_CUDA_ATTN_TILES", paths}});
        EXPECT_EQ(gpu.value("device", ""), "cuda:0");
        EXPECT_EQ(gpu.value("logits_sha256", ""), cpu["logits_sha256"])
            << verb << " --batch " << batch << ", prompt paths " << paths;
      }
  }
}

TEST(Engine, EngineExecutableIsStatic) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "a sanitizer build (GALLEON_SANITIZE) links the engine dynamically";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  GTEST_SKIP() << "a sanitizer build (GALLEON_SANITIZE) links the engine dynamically";
#endif
#endif
  std::string elf = testing::read_file(bin_path("galleon-engine"));
  ASSERT_GT(elf.size(), sizeof(Elf64_Ehdr));
  Elf64_Ehdr eh;
  std::memcpy(&eh, elf.data(), sizeof eh);
  ASSERT_EQ(std::memcmp(eh.e_ident, ELFMAG, SELFMAG), 0);
  for (int i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    std::memcpy(&ph, elf.data() + eh.e_phoff + size_t(i) * eh.e_phentsize, sizeof ph);
    EXPECT_NE(ph.p_type, uint32_t(PT_INTERP)) << "galleon-engine asks for a dynamic loader";
  }
}

// Synthetic models of every runnable type and both architectures, in process.
using testing::SynthCase;

class SynthModels : public ::testing::TestWithParam<SynthCase> {};

std::string logits_hash(const LoadedModel& m, const std::vector<int32_t>& toks, kern::Isa isa,
                        int threads, int64_t batch) {
  SessionOptions o;
  o.isa = isa;
  o.n_threads = threads;
  o.min_parallel_work = 0;  // split every step across the threads
  Session s(*m.model, o);
  Sha256 h;
  std::vector<float> logits;
  for (size_t i = 0; i < toks.size(); i += size_t(batch)) {
    std::vector<int32_t> b(toks.begin() + long(i), toks.begin() + long(std::min(toks.size(), i + size_t(batch))));
    s.eval(b, logits);
    for (float x : logits) EXPECT_TRUE(std::isfinite(x));
    hash_logits(h, logits.data(), logits.size());
  }
  return h.finish_hex();
}


// RoPE variants from metadata: llama3 per-pair frequency factors (rope_freqs.weight) and linear
// position scaling. Factors of 1 change nothing; other factors change the logits.
std::string synth_hash(const std::string& path) {
  LoadedModel m = load_model(path);
  std::vector<int32_t> toks;
  for (int i = 0; i < 24; ++i) toks.push_back(int32_t(3 + i * 5));
  return logits_hash(m, toks, kern::Isa::Scalar, 1, 64);
}

TEST(Engine, RopeFrequencyFactorsAndLinearScaling) {
  testing::TempDir dir;
  SynthSpec spec;
  const int64_t pairs = spec.n_embd / spec.n_head / 2;
  auto write = [&](const std::string& name, float factor, float linear) {
    GgufWriter w;
    make_synthetic_model(spec, w);
    if (factor > 0) {
      std::vector<float> f(static_cast<size_t>(pairs), factor);
      w.add_tensor("rope_freqs.weight", GgmlType::F32, {pairs}, f.data(), f.size() * 4);
    }
    if (linear > 0) {
      w.set("llama.rope.scaling.type", GgufValue::make_string("linear"));
      w.set("llama.rope.scaling.factor", GgufValue::make_f32(linear));
    }
    w.write_file(dir.file(name));
    return synth_hash(dir.file(name));
  };
  const std::string plain = write("plain.gguf", 0, 0);
  EXPECT_EQ(write("ones.gguf", 1.0f, 0), plain);
  EXPECT_NE(write("fours.gguf", 4.0f, 0), plain);
  EXPECT_EQ(write("linear1.gguf", 0, 1.0f), plain);
  // Dividing every frequency by 4 and dividing positions by 4 are the same rotation angles.
  EXPECT_EQ(write("linear4.gguf", 0, 4.0f), write("fours2.gguf", 4.0f, 0));
}

// A GGUF rewritten with fn(name, f32 elements) applied to its F32 tensors and the metadata key
// `eps_key` set to 1e-30.
void rewrite_f32(const std::string& from, const std::string& to, const std::string& eps_key,
                 const std::function<void(const std::string&, std::vector<float>&)>& fn) {
  testing::rewrite_gguf(from, to, "", fn,
                        [&](GgufWriter& w) { w.set(eps_key, GgufValue::make_f32(1e-30f)); });
}

// qwen3 RMS-norms each head of Q and K: with eps negligible, scaling head h's rows of attn_q and
// attn_k by 2^(h+1) (exact in binary32) leaves every logit bit-identical, which holds only where
// the norm is taken per head; qwen2's Q and K (no norms) change with the same scaling.
TEST(Engine, Qwen3NormsEachHeadOfQAndK) {
  testing::TempDir dir;
  for (const char* arch : {"qwen3", "qwen2"}) {
    SynthSpec spec;
    spec.arch = arch;
    spec.head_dim = 32;
    GgufWriter w;
    make_synthetic_model(spec, w);
    w.write_file(dir.file("src.gguf"));
    const std::string eps_key = std::string(arch) + ".attention.layer_norm_rms_epsilon";
    const int64_t hd = spec.head_dim, d = spec.n_embd;
    rewrite_f32(dir.file("src.gguf"), dir.file("a.gguf"), eps_key, [](auto&, auto&) {});
    rewrite_f32(dir.file("src.gguf"), dir.file("b.gguf"), eps_key,
                [&](const std::string& name, std::vector<float>& v) {
                  if (name.find("attn_q.weight") == std::string::npos &&
                      name.find("attn_k.weight") == std::string::npos)
                    return;
                  for (size_t i = 0; i < v.size(); ++i) v[i] *= float(2 << (int64_t(i) / d / hd));
                });
    if (std::string(arch) == "qwen3")
      EXPECT_EQ(synth_hash(dir.file("a.gguf")), synth_hash(dir.file("b.gguf")));
    else
      EXPECT_NE(synth_hash(dir.file("a.gguf")), synth_hash(dir.file("b.gguf")));
  }
  // Without the norms' tensors a qwen3 file is refused by name.
  SynthSpec spec;
  spec.arch = "qwen2";
  GgufWriter w;
  make_synthetic_model(spec, w);
  w.set("general.architecture", GgufValue::make_string("qwen3"));
  const std::pair<const char*, int64_t> keys[] = {
      {"context_length", spec.n_ctx},   {"embedding_length", spec.n_embd},
      {"feed_forward_length", spec.n_ff}, {"block_count", spec.n_layer},
      {"attention.head_count", spec.n_head}, {"attention.head_count_kv", spec.n_head_kv}};
  for (const auto& [k, v] : keys) {
    w.set(std::string("qwen3.") + k, GgufValue::make_u32(uint32_t(v)));
  }
  w.write_file(dir.file("no_norms.gguf"));
  try {
    load_model(dir.file("no_norms.gguf"));
    ADD_FAILURE() << "loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'blk.0.attn_q_norm.weight' is missing"),
              std::string::npos) << e.what();
  }
}

// A fused attn_qkv (phi3's files; any architecture's may have one) is read as the rows of Q, K
// and V: a model with the same values in three tensors (the synthetic writer draws them in the
// same order) gives the same logits.
TEST(Engine, Phi3FusedQkvEqualsSeparateMatrices) {
  testing::TempDir dir;
  for (const char* arch : {"phi3", "internlm2"}) {
    std::string hashes[2];
    for (bool fused : {true, false}) {
      SynthSpec spec;
      spec.arch = arch;
      spec.type = GgmlType::Q8_0;
      spec.fused_qkv = fused;
      GgufWriter w;
      make_synthetic_model(spec, w);
      w.write_file(dir.file(fused ? "fused.gguf" : "separate.gguf"));
      hashes[fused] = synth_hash(dir.file(fused ? "fused.gguf" : "separate.gguf"));
    }
    EXPECT_EQ(hashes[0], hashes[1]) << arch;
  }
  // A LongRoPE factor tensor without its pair is refused by name, not run wrongly.
  SynthSpec spec;
  spec.arch = "phi3";
  GgufWriter w;
  make_synthetic_model(spec, w);
  std::vector<float> ones(size_t(spec.n_embd / spec.n_head / 2), 1.0f);
  w.add_tensor("rope_factors_long.weight", GgmlType::F32, {int64_t(ones.size())}, ones.data(),
               ones.size() * 4);
  w.write_file(dir.file("longrope.gguf"));
  try {
    load_model(dir.file("longrope.gguf"));
    ADD_FAILURE() << "loaded";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Invalid);
    EXPECT_NE(std::string(e.what()).find("rope_factors_long.weight"), std::string::npos);
  }
}

TEST(Engine, LastLogitRowEqualsTheLastRowOfAll) {
  testing::TempDir dir;
  SynthSpec spec;
  spec.type = GgmlType::Q4_0;
  GgufWriter w;
  make_synthetic_model(spec, w);
  w.write_file(dir.file("m.gguf"));
  LoadedModel m = load_model(dir.file("m.gguf"));
  std::vector<int32_t> toks;
  for (int i = 0; i < 20; ++i) toks.push_back(int32_t(3 + i * 7));
  SessionOptions o;
  o.isa = kern::best_isa();
  o.n_threads = 2;
  Session all(*m.model, o), last(*m.model, o);
  std::vector<float> a, l;
  all.eval(toks, a);
  last.eval(toks, l, Session::LogitRows::Last);
  const size_t nv = size_t(m.model->hparams().n_vocab);
  ASSERT_EQ(a.size(), toks.size() * nv);
  ASSERT_EQ(l.size(), nv);
  EXPECT_EQ(0, std::memcmp(l.data(), a.data() + a.size() - nv, nv * 4));
  // Both sessions continue identically.
  all.eval({5}, a);
  last.eval({5}, l);
  EXPECT_EQ(a, l);
  // LogitRows::None computes no row but caches the positions like the others.
  Session none(*m.model, o);
  std::vector<float> n{1.0f};
  none.eval(toks, n, Session::LogitRows::None);
  EXPECT_TRUE(n.empty());
  EXPECT_EQ(none.n_past(), int64_t(toks.size()));
  none.eval({5}, n);
  all.eval({9}, a);
  last.eval({9}, l);
  none.eval({9}, n);
  EXPECT_EQ(n, a);
  EXPECT_EQ(l, a);
}

// Evaluator::reset (llama_bench's repetitions): the evaluator gives again a new one's bits.
TEST(Engine, ResetEvaluatorGivesTheBitsOfANewOne) {
  testing::TempDir dir;
  SynthSpec spec;
  spec.type = GgmlType::Q4_K;
  LoadedModel m = testing::write_and_load(spec, dir);
  ComputeOptions o = default_compute_options();
  o.n_threads = 2;
  auto run = [&](Evaluator& ev) {
    std::vector<float> rows, logits;
    std::vector<int32_t> prompt;
    for (int i = 0; i < 12; ++i) prompt.push_back(int32_t(3 + i * 5));
    ev.eval(prompt, logits, Evaluator::Rows::Last);
    rows = logits;
    for (int32_t t : {7, 11, 13}) {
      ev.eval({t}, logits);
      rows.insert(rows.end(), logits.begin(), logits.end());
    }
    return rows;
  };
  const std::unique_ptr<Evaluator> ev = make_evaluator(*m.model, o, 0);
  const std::vector<float> first = run(*ev);
  ev->reset();
  EXPECT_TRUE(run(*ev) == first);
  EXPECT_TRUE(run(*make_evaluator(*m.model, o, 0)) == first);
}

// generate's fingerprint (docs/arithmetic.md section 10): the last prompt row, then the row of
// each generated token but the last, whatever the prompt batch size; score's: every row.
TEST(Engine, FingerprintsHashTheRowsEachCommandUses) {
  testing::TempDir dir;
  SynthSpec spec;
  spec.type = GgmlType::Q8_0;
  LoadedModel m = testing::write_and_load(spec, dir);
  const std::vector<int32_t> prompt = testing::synth_tokens(13, spec.n_vocab);
  const size_t nv = size_t(m.model->hparams().n_vocab);
  GenerateRequest req;
  req.prompt_tokens = prompt;
  req.max_tokens = 6;
  req.ignore_eos = true;
  req.sampling.temperature = 0.8f;
  req.sampling.seed = 11;
  req.compute.n_threads = 2;
  req.compute.isa = kern::best_isa();
  std::string first;
  GenerateResult r;
  for (int64_t batch : {256, 1, 4, 13}) {
    req.compute.max_batch = batch;
    r = generate(m, req, nullptr);
    if (first.empty()) first = r.logits_sha256;
    EXPECT_EQ(r.logits_sha256, first) << "batch " << batch;
  }
  ASSERT_EQ(r.tokens.size(), 6u);
  // The same rows computed by hand, from a session that evaluates every row.
  SessionOptions o;
  o.isa = kern::Isa::Scalar;
  o.n_threads = 1;
  Session s(*m.model, o);
  std::vector<float> logits;
  s.eval(prompt, logits);
  Sha256 h;
  hash_logits(h, logits.data() + logits.size() - nv, nv);
  std::vector<float> every(logits);
  for (size_t i = 0; i + 1 < r.tokens.size(); ++i) {
    s.eval({r.tokens[i]}, logits);
    hash_logits(h, logits.data(), nv);
    every.insert(every.end(), logits.begin(), logits.end());
  }
  EXPECT_EQ(r.logits_sha256, h.finish_hex());
  // score over prompt + generated tokens but the last hashes every row.
  std::vector<int32_t> text = prompt;
  text.insert(text.end(), r.tokens.begin(), r.tokens.end() - 1);
  Sha256 all;
  hash_logits(all, every.data(), every.size());
  EXPECT_EQ(score(m, text, req.compute).logits_sha256, all.finish_hex());
}

TEST_P(SynthModels, BitIdenticalAcrossIsaThreadsAndBatches) {
  const SynthCase c = GetParam();
  testing::TempDir dir;
  SynthSpec spec = testing::synth_case_spec(c);
  spec.n_layer = 2;
  LoadedModel m = testing::write_and_load(spec, dir);
  const std::vector<int32_t> toks = testing::synth_tokens(40, spec.n_vocab);
  const std::string ref = logits_hash(m, toks, kern::Isa::Scalar, 1, 64);
  for (kern::Isa isa : available_isas())
    for (int threads : {1, 3})
      for (int64_t batch : {64, 1, 7})
        EXPECT_EQ(logits_hash(m, toks, isa, threads, batch), ref)
            << type_name(c.type) << " " << c.arch << " isa " << kern::isa_name(isa) << " threads "
            << threads << " batch " << batch;
}

INSTANTIATE_TEST_SUITE_P(AllTypes, SynthModels, testing::all_synth_cases(),
                         testing::synth_case_name);

}  // namespace
}  // namespace galleon
