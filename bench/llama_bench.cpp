// Prompt and generation throughput of synthetic Llama-shaped models (seeded random weights),
// like llama-bench -p 128 -n 64: prints tok/s at 1 and 2 threads, peak RSS, and the share of
// memory read bandwidth that decoding uses (measured with the same thread count in the same run).
//
//   llama_bench [--shape 124m|1.1b|tiny] [--type q4_0,q8_0,...] [--threads 1,2] [-p 128] [-n 64]
//               (types: GGML type names, or q4_K_M: Q4_K with attn_v and ffn_down in Q6_K)
//               [-r 3] [--cpu-time] [--save DIR] [--device cpu,cuda:0]
//               [--arch llama|qwen2|qwen3|phi3|gemma|gemma2|gemma3|granite|olmo2|smollm3]
//               [--cuda-paths lanes,gemm,tiles,gemm+tiles]
//               [--cuda-mma r2,s2,s4,t4,k4,k8,p4,u4,v4,w4,x4,y4]
//   llama_bench --write DIR [--shape ..] [--type ..] [--arch ..]   (writes DIR/ARCH-SHAPE-TYPE.gguf)
// Like llama-bench: one session per configuration, one warm-up run, then -r repetitions, each
// part from position 0 of the session reset (as llama-bench clears its KV cache: the buffers a
// session sized for its first prompt stay, as llama.cpp's context keeps its compute buffers);
// the table shows the mean. The prompt is timed twice: with every position's logits (what
// galleon score computes) and with the last position's only (what galleon run and
// llama-bench's prompt test compute); then the generated tokens one at a time.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "runtime/engine.h"
#include "runtime/huge_memory.h"
#include "runtime/error.h"
#include "runtime/synth.h"

using namespace galleon;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

SynthSpec shape(const std::string& name) {
  SynthSpec s;
  if (name == "124m") {
    s.n_embd = 768, s.n_layer = 12, s.n_head = 12, s.n_head_kv = 4, s.n_ff = 2048;
  } else if (name == "1.1b") {
    s.n_embd = 2048, s.n_layer = 22, s.n_head = 32, s.n_head_kv = 4, s.n_ff = 5632;
  } else if (name == "tiny") {
    s.n_embd = 256, s.n_layer = 2, s.n_head = 4, s.n_head_kv = 2, s.n_ff = 512;
  } else {
    fail(ErrorKind::Usage, "unknown shape " + name + " (124m, 1.1b, tiny)");
  }
  s.n_vocab = name == "tiny" ? 512 : 32000;
  s.n_ctx = 2048;
  return s;
}

// Memory read bandwidth with `threads` threads, each summing its own slice of a 1 GiB buffer
// (best of 3): what decoding, which reads every weight once per token, can at most use. The
// buffer is memory of the kind the weights are read into (HugeMemory, as `galleon run`).
double read_bandwidth_gbs(int threads) {
  const size_t n = (size_t(1) << 30) / sizeof(uint64_t);
  HugeMemory mem(n * sizeof(uint64_t), "the bandwidth check's buffer");
  uint64_t* buf = reinterpret_cast<uint64_t*>(mem.data());
  std::fill(buf, buf + n, uint64_t(1));
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<uint64_t> sums(size_t(threads) * 8);
    auto t0 = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        const size_t lo = n * size_t(t) / size_t(threads), hi = n * size_t(t + 1) / size_t(threads);
        uint64_t a = 0, b = 0, c = 0, d = 0;
        for (size_t i = lo; i + 4 <= hi; i += 4) a += buf[i], b += buf[i + 1], c += buf[i + 2], d += buf[i + 3];
        sums[size_t(t) * 8] = a + b + c + d;
      });
    for (auto& th : pool) th.join();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (sums[0] == 0) fail(ErrorKind::Internal, "bandwidth check read nothing");  // keeps the loop
    best = std::max(best, double(n * sizeof(uint64_t)) / s / 1e9);
  }
  return best;
}

// Peak resident set (VmHWM) since the last reset_peak_rss().
double peak_rss_mib() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  double kib = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::strncmp(line, "VmHWM:", 6) == 0) kib = std::atof(line + 6);
  std::fclose(f);
  return kib / 1024.0;
}

void reset_peak_rss() {
  if (FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
}

uint64_t weight_bytes(const Model& m) {
  uint64_t b = 0;
  for (const auto& t : m.file().tensors())
    if (t.name != "token_embd.weight" || !m.file().find_tensor("output.weight")) b += t.n_bytes;
  return b;
}

struct Timing {
  double pp, pp_last, tg;  // tok/s
};

// --cpu-time: seconds of CPU time of the whole process instead of wall time (for comparing
// 1-thread figures on a machine that other jobs share).
bool g_cpu_time = false;
std::string g_save_dir;  // --save DIR: keep the synthetic GGUF files there (ARCH-SHAPE-TYPE.gguf)
double now_s() {
  if (!g_cpu_time) return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

Timing time_once(Evaluator& ev, int n_prompt, int n_gen, int n_vocab) {
  std::vector<int32_t> prompt;
  for (int i = 0; i < n_prompt; ++i) prompt.push_back(int32_t(3 + (i * 7919) % (n_vocab - 3)));
  std::vector<float> logits;
  // The prompt computing only the last row of logits, then every row.
  ev.reset();
  const double t = now_s();
  ev.eval(prompt, logits, Evaluator::Rows::Last);
  const double pp_last = n_prompt / (now_s() - t);
  ev.reset();
  const double t0 = now_s();
  ev.eval(prompt, logits);
  const double pp = n_prompt / (now_s() - t0);
  // Generation from an empty context, as llama-bench's -n test: n_gen tokens one at a time.
  ev.reset();
  const double t1 = now_s();
  int32_t tok = 5;
  for (int i = 0; i < n_gen; ++i) ev.eval({tok}, logits), tok = int32_t((tok * 31 + 7) % n_vocab);
  const double tg = n_gen / (now_s() - t1);
  return {pp, pp_last, tg};
}

struct BenchArgs {
  std::string shape_name = "124m", arch = "llama";
  std::vector<int> threads;
  std::vector<Device> devices;
  // GPU paths (docs/cuda.md): the defaults, GALLEON_CUDA_GEMM=1 and/or GALLEON_CUDA_ATTN_TILES=1.
  struct CudaPath {
    bool gemm = false, tiles = false;
  };
  std::vector<CudaPath> cuda_paths;  // from --cuda-paths (default: the defaults)
  // GALLEON_CUDA_MMA variants, from --cuda-mma (default: y4, the session's).
  std::vector<std::string> cuda_mma;
  int n_prompt = 128, n_gen = 64, reps = 3;
};

// A --type: a tensor type for every matrix, or q4_K_M (llama.cpp's: Q4_K, with attn_v and
// ffn_down in Q6_K).
struct BenchType {
  GgmlType type;
  bool k_m = false;
  std::string name() const { return k_m ? "q4_K_M" : type_name(type); }
};

SynthSpec spec_for(const BenchArgs& a, BenchType type) {
  SynthSpec spec = shape(a.shape_name);
  spec.arch = a.arch;
  // gemma2/gemma3/olmo2: the tiny shape's windows shorter than gpu-check's prompts, so that
  // they matter.
  if (a.shape_name == "tiny" && (a.arch == "gemma2" || a.arch == "gemma3" || a.arch == "olmo2"))
    spec.n_swa = 16;
  spec.attn_biases = a.arch == "exaone";  // its optional biases, all of them
  spec.type = type.type;
  spec.embd_type = type.type;
  if (type.k_m) spec.v_down_type = GgmlType::Q6_K;
  return spec;
}

// Writes the synthetic model to path, in a child process so that its memory does not count in
// the peak RSS that the benchmark reports.
void synthesize(const SynthSpec& spec, const char* path) {
  const pid_t pid = fork();
  if (pid == 0) {
    try {
      GgufWriter w;
      make_synthetic_model(spec, w);
      w.write_file(path);
      _exit(0);
    } catch (const Error& e) {
      std::fprintf(stderr, "llama_bench: %s\n", e.message().c_str());
      _exit(1);
    }
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail(ErrorKind::Internal, "synthesizing the model failed");
}

void bench_one(const BenchArgs& a, BenchType type, const std::map<int, double>& bw) {
  const SynthSpec spec = spec_for(a, type);
  char path[] = "/tmp/galleon-bench-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) fail(ErrorKind::Io, "mkstemp failed");
  close(fd);
  // A model kept by an earlier run with the same --save DIR has the same seeded weights: taken
  // from there instead of synthesized again.
  const std::string keep = g_save_dir.empty() ? std::string()
                                              : g_save_dir + "/" + a.arch + "-" + a.shape_name +
                                                    "-" + type.name() + ".gguf";
  const bool kept = !keep.empty() && std::rename(keep.c_str(), path) == 0;
  if (!kept) synthesize(spec, path);
  reset_peak_rss();
  LoadedModel m = load_model(path, 0, 0, Residence::Memory);  // as galleon run (default)
  const double gb_per_token = double(weight_bytes(*m.model)) / 1e9;
  for (const Device& dev : a.devices) {
    const bool cpu = dev.kind == Device::Kind::Cpu;
    for (const BenchArgs::CudaPath& cp : cpu ? std::vector<BenchArgs::CudaPath>{{}} : a.cuda_paths)
      for (const std::string& mma : cpu ? std::vector<std::string>{""} : a.cuda_mma)
        for (int t : a.threads) {
          // The CUDA session reads GALLEON_CUDA_GEMM, GALLEON_CUDA_ATTN_TILES and GALLEON_CUDA_MMA
          // when it is made (docs/cuda.md).
          if (!cpu) {
            setenv("GALLEON_CUDA_GEMM", cp.gemm ? "1" : "0", 1);
            setenv("GALLEON_CUDA_ATTN_TILES", cp.tiles ? "1" : "0", 1);
            setenv("GALLEON_CUDA_MMA", mma.c_str(), 1);
          }
          ComputeOptions o = default_compute_options();
          o.n_threads = t;
          o.device = dev;
          const int n_vocab = int(spec.n_vocab);
          const std::unique_ptr<Evaluator> ev = make_evaluator(*m.model, o, 0);
          time_once(*ev, a.n_prompt, a.n_gen, n_vocab);  // warm-up
          double pp = 0, pp_last = 0, tg = 0;
          for (int r = 0; r < a.reps; ++r) {
            const Timing tm = time_once(*ev, a.n_prompt, a.n_gen, n_vocab);
            pp += tm.pp / a.reps, pp_last += tm.pp_last / a.reps, tg += tm.tg / a.reps;
          }
          // GPU rows: the device (+gemm: the prompt GEMM tiles, +tiles: attention's K tiles, /v:
          // tensor-core variant v when several are compared) in the isa column; bw use (of the
          // CPU's read bandwidth) is 0.
          const std::string where =
              cpu ? std::string(kern::isa_name(o.isa))
                  : device_name(dev) + (cp.gemm ? "+gemm" : "") + (cp.tiles ? "+tiles" : "") +
                        (a.cuda_mma.size() > 1 ? "/" + mma : "");
          std::printf("| %-5s | %-6s | %-6s | %7s | %10.1f | %10.1f | %10.1f | %8.0f | %5.1f%% |\n",
                      a.shape_name.c_str(), type.name().c_str(), where.c_str(),
                      cpu ? std::to_string(t).c_str() : "-", pp, pp_last, tg, peak_rss_mib(),
                      cpu ? 100.0 * gb_per_token * tg / bw.at(t) : 0.0);
          std::fflush(stdout);
          if (!cpu) break;  // threads do not apply to a GPU
        }
  }
  if (!keep.empty()) {
    if (std::rename(path, keep.c_str()) != 0) fail(ErrorKind::Io, "cannot move the model to " + keep);
    std::printf("(model kept: %s)\n", keep.c_str());
  } else {
    unlink(path);
  }
}

// --write DIR: the synthetic models only, no benchmark.
void write_models(const BenchArgs& a, const std::vector<BenchType>& types, const std::string& dir) {
  for (BenchType t : types) {
    GgufWriter w;
    make_synthetic_model(spec_for(a, t), w);
    const std::string path = dir + "/" + a.arch + "-" + a.shape_name + "-" + t.name() + ".gguf";
    w.write_file(path);
    std::printf("%s\n", path.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  BenchArgs a;
  std::string types = "f32,f16,q8_0,q4_0,q4_K,q6_K", threads_s = "1,2", devices_s = "cpu", write_dir,
              cuda_paths_s = "gemm+tiles", cuda_mma_s = "y4";
  for (int i = 1; i < argc; i += 2) {
    if (std::string(argv[i]) == "--cpu-time") {
      g_cpu_time = true;
      --i;
      continue;
    }
    if (i + 1 >= argc) { std::fprintf(stderr, "option %s needs a value\n", argv[i]); return 2; }
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--shape") a.shape_name = v;
    else if (k == "--type") types = v;
    else if (k == "--threads") threads_s = v;
    else if (k == "--device") devices_s = v;
    else if (k == "--arch") a.arch = v;
    else if (k == "--write") write_dir = v;
    else if (k == "-p") a.n_prompt = std::stoi(v);
    else if (k == "-n") a.n_gen = std::stoi(v);
    else if (k == "-r") a.reps = std::max(1, std::stoi(v));
    else if (k == "--save") g_save_dir = v;
    else if (k == "--cuda-paths") cuda_paths_s = v;
    else if (k == "--cuda-mma") cuda_mma_s = v;
    else { std::fprintf(stderr, "unknown option %s\n", k.c_str()); return 2; }
  }
  try {
    std::vector<BenchType> type_list;
    for (auto& tn : split(types)) {
      if (tn == "q4_K_M") {
        type_list.push_back({GgmlType::Q4_K, true});
        continue;
      }
      auto t = type_from_name(tn.c_str());
      if (!t) fail(ErrorKind::Usage, "unknown type " + tn + " (a GGML type name, or q4_K_M)");
      type_list.push_back({*t});
    }
    if (!write_dir.empty()) {
      write_models(a, type_list, write_dir);
      return 0;
    }
    for (auto& t : split(threads_s)) a.threads.push_back(std::stoi(t));
    for (auto& d : split(devices_s)) a.devices.push_back(parse_device(d));
    for (auto& path : split(cuda_paths_s)) {
      if (path != "lanes" && path != "gemm" && path != "tiles" && path != "gemm+tiles")
        fail(ErrorKind::Usage, "--cuda-paths: unknown path " + path +
                                   " (expected lanes, gemm, tiles or gemm+tiles)");
      a.cuda_paths.push_back({path.find("gemm") != std::string::npos,
                              path.find("tiles") != std::string::npos});
    }
    for (auto& v : split(cuda_mma_s)) {
      static const std::set<std::string> kVariants = {"r2", "s2", "s4", "t4", "k4",
                                                      "k8", "p4", "u4", "v4", "w4", "x4",
                                                      "y4"};
      if (!kVariants.count(v))
        fail(ErrorKind::Usage,
             "--cuda-mma: unknown variant " + v +
                 " (expected r2, s2, s4, t4, k4, k8, p4, u4, v4, w4, x4 or y4)");
      a.cuda_mma.push_back(v);
    }
    std::map<int, double> bw;
    std::printf("memory read bandwidth:");
    for (int t : a.threads) {
      bw[t] = read_bandwidth_gbs(t);
      std::printf(" %.1f GB/s with %d thread%s;", bw[t], t, t == 1 ? "" : "s");
    }
    std::printf(" bw use = weight bytes per token x gen t/s / that\n");
    std::printf("prompt t/s: every prompt position's logits (as galleon score computes them); "
                "last only: the last position's logits (as galleon run and llama-bench -p)\n");
    std::printf("| shape | type   | isa    | threads | prompt t/s | last only  | gen t/s    | RSS MiB  | bw use |\n");
    std::printf("|-------|--------|--------|---------|------------|------------|------------|----------|--------|\n");
    for (BenchType t : type_list) bench_one(a, t, bw);
  } catch (const Error& e) {
    std::fprintf(stderr, "llama_bench: %s\n", e.message().c_str());
    return exit_code(e.kind());
  }
  return 0;
}
