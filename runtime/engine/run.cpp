#include <cstdio>
#include <iostream>
#include <memory>

#include "runtime/engine/verbs.h"
#include "runtime/error.h"

namespace galleon::engine {
namespace {

struct RunArgs {
  ModelArg model;
  ComputeArgs compute;
  std::string prompt, file;
  int32_t max_tokens = 256;
  SamplerParams sampling;
  bool ignore_eos = false, json = false, parse_special = false, no_bos = false;
};

void run(const RunArgs& a, bool prompt_given, bool file_given) {
  const std::string text = text_or_file(a.prompt, a.file, prompt_given, file_given, "--prompt");
  LoadedModel m = a.model.load();
  GenerateRequest req;
  req.prompt_tokens = tokenize(m, text, a.no_bos, a.parse_special);
  req.max_tokens = a.max_tokens;
  req.sampling = a.sampling;
  req.ignore_eos = a.ignore_eos;
  req.compute = a.compute.options();
  auto stream = [&](const std::string& piece) {
    if (a.json) return;
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  };
  GenerateResult r = generate(m, req, stream);
  if (!a.json) {
    std::fputc('\n', stdout);
    std::fflush(stdout);
    return;
  }
  print_json({{"prompt_tokens", r.prompt_tokens},
              {"tokens", r.tokens},
              {"text", r.text},
              {"logits_sha256", r.logits_sha256},
              {"device", device_name(req.compute.device)},
              {"tokens_per_second", {{"prompt", r.prompt_tps}, {"generate", r.generate_tps}}}});
}

}  // namespace

void add_run(CLI::App& app) {
  auto a = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand("run", "Generate text from a prompt");
  a->model.add_to(cmd);
  auto* prompt = cmd->add_option("--prompt,-p", a->prompt, "Prompt text");
  auto* file = cmd->add_option("--file,-f", a->file, "Read the prompt from a file");
  cmd->add_option("--max-tokens,-n", a->max_tokens, "Tokens to generate at most")
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("--temperature", a->sampling.temperature, "0 = greedy")
      ->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-k", a->sampling.top_k, "Keep the K most likely tokens (0 = off)")
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("--top-p", a->sampling.top_p, "Nucleus sampling mass (1 = off)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--min-p", a->sampling.min_p, "Drop tokens below P x the top probability")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--repeat-penalty", a->sampling.repeat_penalty, "1 = off")
      ->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--repeat-last-n", a->sampling.repeat_last_n, "Window of the repeat penalty")
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("--seed", a->sampling.seed, "Sampling seed");
  a->compute.add_to(cmd);
  cmd->add_flag("--ignore-eos", a->ignore_eos, "Do not stop at end-of-generation tokens");
  cmd->add_flag("--parse-special", a->parse_special, "Treat special-token text as tokens");
  cmd->add_flag("--no-bos", a->no_bos, "Do not add the BOS token");
  cmd->add_flag("--json", a->json, "Print one JSON object instead of streaming text");
  cmd->callback([a, prompt, file] { run(*a, prompt->count() > 0, file->count() > 0); });
}

}  // namespace galleon::engine
