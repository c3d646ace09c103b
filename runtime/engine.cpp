#include "runtime/engine.h"

#include <chrono>
#include <cstring>
#include <thread>

#include "runtime/canon_math.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/error.h"
#include "runtime/sha256.h"

namespace galleon {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

SessionOptions session_options(const ComputeOptions& c, int64_t n_ctx) {
  SessionOptions o;
  o.n_ctx = n_ctx;
  o.n_threads = c.n_threads > 0 ? c.n_threads : int(std::max(1u, std::thread::hardware_concurrency()));
  o.isa = c.isa;
  o.max_batch = c.max_batch;
  return o;
}

class CpuEvaluator final : public Evaluator {
 public:
  CpuEvaluator(const Model& m, const SessionOptions& o) : s_(m, o) {}
  int64_t n_ctx() const override { return s_.n_ctx(); }
  void reset() override { s_.reset(); }

 private:
  void do_eval(const std::vector<int32_t>& tokens, std::vector<float>& logits,
               Rows rows) override {
    s_.eval(tokens, logits, rows);
  }
  Session s_;
};

// Evaluates tokens in batches of at most max_batch. With Rows::All `out` receives every logits
// row; with Rows::Last only the last token's row (earlier batches compute no logits).
void eval_batched(Evaluator& s, const std::vector<int32_t>& tokens, int64_t max_batch,
                  Evaluator::Rows rows, std::vector<float>& out) {
  std::vector<float> logits;
  out.clear();
  for (size_t i = 0; i < tokens.size(); i += size_t(max_batch)) {
    const size_t end = std::min(tokens.size(), i + size_t(max_batch));
    std::vector<int32_t> batch(tokens.begin() + long(i), tokens.begin() + long(end));
    const bool last_batch = end == tokens.size();
    s.eval(batch, logits, rows == Evaluator::Rows::All ? rows
                          : last_batch                 ? Evaluator::Rows::Last
                                                       : Evaluator::Rows::None);
    out.insert(out.end(), logits.begin(), logits.end());
  }
}

}  // namespace

void hash_logits(Sha256& h, const float* logits, size_t n) {
  static_assert(sizeof(float) == 4);
  // x86-64 and aarch64 Linux are little-endian; the bytes are hashed as they lie.
  h.update(logits, n * 4);
}

std::unique_ptr<Evaluator> make_evaluator(const Model& model, const ComputeOptions& c,
                                          int64_t n_ctx) {
  if (c.device.kind == Device::Kind::Cuda) return cuda::make_session(model, c.device.index, n_ctx);
  return std::make_unique<CpuEvaluator>(model, session_options(c, n_ctx));
}

ComputeOptions default_compute_options() {
  ComputeOptions c;
  c.isa = kern::isa_from_env();
  return c;
}

LoadedModel load_model(const std::string& path, uint64_t offset, uint64_t size, Residence where) {
  LoadedModel m;
  m.file = GgufFile::open(path, offset, size, where);
  m.model = Model::load(*m.file);
  m.tokenizer = Tokenizer::from_gguf(*m.file);
  if (m.tokenizer->n_vocab() != m.model->hparams().n_vocab)
    fail(ErrorKind::Invalid, path + ": the vocabulary has " +
                                 std::to_string(m.tokenizer->n_vocab()) +
                                 " tokens but token_embd.weight has " +
                                 std::to_string(m.model->hparams().n_vocab) + " rows");
  return m;
}

GenerateResult generate(const LoadedModel& m, const GenerateRequest& req,
                        const std::function<void(const std::string&)>& on_text) {
  const HParams& hp = m.model->hparams();
  if (req.prompt_tokens.empty()) fail(ErrorKind::Usage, "the prompt is empty (no tokens)");
  const int64_t want = int64_t(req.prompt_tokens.size()) + std::max(0, req.max_tokens);
  if (int64_t(req.prompt_tokens.size()) > hp.n_ctx_train)
    fail(ErrorKind::Invalid, "the prompt has " + std::to_string(req.prompt_tokens.size()) +
                                 " tokens, more than the model's context_length " +
                                 std::to_string(hp.n_ctx_train));
  auto ev = make_evaluator(*m.model, req.compute, std::min(want, hp.n_ctx_train));
  Evaluator& s = *ev;
  Sampler sampler(req.sampling);
  for (int32_t t : req.prompt_tokens) sampler.accept(t);
  GenerateResult r;
  r.prompt_tokens = req.prompt_tokens;
  Sha256 h;
  std::vector<float> last;
  auto t0 = Clock::now();
  eval_batched(s, req.prompt_tokens, req.compute.max_batch, Evaluator::Rows::Last, last);
  hash_logits(h, last.data(), last.size());
  double prompt_s = seconds_since(t0);
  r.prompt_tps = prompt_s > 0 ? double(req.prompt_tokens.size()) / prompt_s : 0;
  auto t1 = Clock::now();
  for (int32_t i = 0; i < req.max_tokens; ++i) {
    const int32_t tok = sampler.sample(last.data(), int32_t(hp.n_vocab));
    if (!req.ignore_eos && m.tokenizer->is_end_of_generation(tok)) break;
    r.tokens.push_back(tok);
    sampler.accept(tok);
    const std::string piece = m.tokenizer->piece(tok);
    r.text += piece;
    if (on_text) on_text(piece);
    if (i + 1 == req.max_tokens ||
        int64_t(r.prompt_tokens.size() + r.tokens.size()) >= s.n_ctx())
      break;
    s.eval({tok}, last);
    hash_logits(h, last.data(), last.size());
  }
  double gen_s = seconds_since(t1);
  r.generate_tps = gen_s > 0 ? double(r.tokens.size()) / gen_s : 0;
  r.logits_sha256 = h.finish_hex();
  return r;
}

ScoreResult score(const LoadedModel& m, const std::vector<int32_t>& tokens,
                  const ComputeOptions& compute) {
  const HParams& hp = m.model->hparams();
  if (tokens.size() < 2) fail(ErrorKind::Usage, "scoring needs at least two tokens");
  if (int64_t(tokens.size()) > hp.n_ctx_train)
    fail(ErrorKind::Invalid, "the text has " + std::to_string(tokens.size()) +
                                 " tokens, more than the model's context_length " +
                                 std::to_string(hp.n_ctx_train));
  auto ev = make_evaluator(*m.model, compute, int64_t(tokens.size()));
  Evaluator& s = *ev;
  Sha256 h;
  std::vector<float> rows;
  eval_batched(s, tokens, compute.max_batch, Evaluator::Rows::All, rows);
  hash_logits(h, rows.data(), rows.size());
  ScoreResult r;
  r.n_tokens = int64_t(tokens.size());
  const size_t V = size_t(hp.n_vocab);
  for (size_t i = 0; i + 1 < tokens.size(); ++i) {
    const float* row = rows.data() + i * V;
    const int32_t best = argmax(row, int32_t(V));
    r.argmax.push_back(best);
    // log-sum-exp in double with the canonical exp/log, summed in index order.
    const double mx = double(row[best]);
    double sum = 0;
    for (size_t j = 0; j < V; ++j) sum = sum + canon::exp(double(row[j]) - mx);
    const double logp = (double(row[size_t(tokens[i + 1])]) - mx) - canon::log(sum);
    r.nll = r.nll - logp;
  }
  r.argmax.push_back(argmax(rows.data() + (tokens.size() - 1) * V, int32_t(V)));
  r.ppl = canon::exp(r.nll / double(tokens.size() - 1));
  r.logits_sha256 = h.finish_hex();
  return r;
}

}  // namespace galleon
