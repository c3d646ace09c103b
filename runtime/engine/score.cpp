#include <cstdio>
#include <memory>
#include <optional>

#include "runtime/engine/verbs.h"
#include "runtime/error.h"

namespace galleon::engine {
namespace {

struct ScoreArgs {
  ModelArg model;
  ComputeArgs compute;
  std::string text, file, vs;
  bool argmax = false, json = false, parse_special = false, no_bos = false;
};

nlohmann::json score_json(const ScoreResult& r, bool with_argmax) {
  nlohmann::json j = {{"n_tokens", r.n_tokens},
                      {"nll", r.nll},
                      {"ppl", r.ppl},
                      {"logits_sha256", r.logits_sha256}};
  if (with_argmax) j["argmax"] = r.argmax;
  return j;
}

ScoreResult score_text(const std::string& path, const ScoreArgs& a, const std::string& text) {
  ModelArg m = a.model;
  if (path != a.model.path) m = ModelArg{path, 0, 0};
  LoadedModel lm = m.load();
  return score(lm, tokenize(lm, text, a.no_bos, a.parse_special), a.compute.options());
}

void print_text(const ScoreArgs& a, const ScoreResult& r, const std::optional<ScoreResult>& o) {
  auto line = [](const char* who, const ScoreResult& s) {
    std::printf("%s: %lld tokens, nll %.6f, ppl %.6f, logits_sha256 %s\n", who,
                static_cast<long long>(s.n_tokens), s.nll, s.ppl, s.logits_sha256.c_str());
  };
  line("model", r);
  if (o) {
    line("vs", *o);
    std::printf("nll difference (model - vs): %.6f\n", r.nll - o->nll);
  }
  if (a.argmax) {
    std::printf("argmax:");
    for (int32_t t : r.argmax) std::printf(" %d", t);
    std::printf("\n");
  }
}

void run_score(const ScoreArgs& a, bool text_given, bool file_given) {
  const std::string text = text_or_file(a.text, a.file, text_given, file_given, "--text");
  const ScoreResult r = score_text(a.model.path, a, text);
  std::optional<ScoreResult> o;
  if (!a.vs.empty()) o = score_text(a.vs, a, text);
  if (!a.json) return print_text(a, r, o);
  nlohmann::json j = score_json(r, a.argmax);
  if (o)
    j = {{"model", j},
         {"vs", score_json(*o, a.argmax)},
         {"nll_difference", r.nll - o->nll},
         {"more_likely", r.nll <= o->nll ? "model" : "vs"}};
  j["device"] = device_name(a.compute.options().device);
  print_json(j);
}

}  // namespace

void add_score(CLI::App& app) {
  auto a = std::make_shared<ScoreArgs>();
  CLI::App* cmd = app.add_subcommand(
      "score", "Negative log-likelihood and perplexity of a text under a model");
  a->model.add_to(cmd);
  auto* text = cmd->add_option("--text,-t", a->text, "Text to score");
  auto* file = cmd->add_option("--file,-f", a->file, "Read the text from a file");
  cmd->add_flag("--argmax", a->argmax, "Also list the most likely next token at every position");
  cmd->add_option("--vs", a->vs, "Score the same text under a second GGUF model and compare");
  a->compute.add_to(cmd);
  cmd->add_flag("--parse-special", a->parse_special, "Treat special-token text as tokens");
  cmd->add_flag("--no-bos", a->no_bos, "Do not add the BOS token");
  cmd->add_flag("--json", a->json, "Print one JSON object");
  cmd->callback([a, text, file] { run_score(*a, text->count() > 0, file->count() > 0); });
}

}  // namespace galleon::engine
