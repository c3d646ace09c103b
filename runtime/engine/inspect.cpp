#include <cstdio>
#include <map>
#include <memory>

#include "runtime/engine/verbs.h"
#include "runtime/error.h"

namespace galleon::engine {
namespace {

struct TokenizeArgs {
  ModelArg model;
  std::string text, file;
  bool no_bos = false, parse_special = false, json = false;
};

void run_tokenize(const TokenizeArgs& a, bool text_given, bool file_given) {
  const std::string text = text_or_file(a.text, a.file, text_given, file_given, "--text");
  auto f = GgufFile::open(a.model.path, a.model.offset, a.model.size);
  auto tok = Tokenizer::from_gguf(*f);
  std::vector<int32_t> ids = tok->encode(text, !a.no_bos && tok->add_bos_default(), a.parse_special);
  if (a.json) return print_json({{"tokens", ids}});
  for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i ? " " : "", ids[i]);
  std::printf("\n");
}

// Metadata value as JSON; long arrays are summarised unless `full`.
nlohmann::json value_json(const GgufValue& v, bool full) {
  switch (v.type) {
    case GgufValueType::U8: case GgufValueType::U16: case GgufValueType::U32:
    case GgufValueType::U64: return v.u;
    case GgufValueType::I8: case GgufValueType::I16: case GgufValueType::I32:
    case GgufValueType::I64: return v.i;
    case GgufValueType::F32: case GgufValueType::F64: return v.f;
    case GgufValueType::BOOL: return v.u != 0;
    case GgufValueType::STRING: return v.s;
    case GgufValueType::ARRAY: {
      if (!full && v.arr.size() > 16)
        return {{"type", std::string("array of ") + gguf_value_type_name(v.elem_type)},
                {"length", v.arr.size()}};
      nlohmann::json a = nlohmann::json::array();
      for (const auto& e : v.arr) a.push_back(value_json(e, full));
      return a;
    }
  }
  return nullptr;
}

nlohmann::json inspect_json(const GgufFile& f) {
  nlohmann::json meta = nlohmann::json::object();
  for (const auto& [k, v] : f.metadata()) meta[k] = value_json(v, false);
  nlohmann::json tensors = nlohmann::json::array();
  std::map<std::string, uint64_t> type_counts;
  uint64_t n_params = 0;
  for (const auto& t : f.tensors()) {
    tensors.push_back({{"name", t.name}, {"type", type_name(t.type)}, {"dims", t.dims},
                       {"offset", t.offset}, {"bytes", t.n_bytes}});
    type_counts[type_name(t.type)] += t.n_elements;
    n_params += t.n_elements;
  }
  nlohmann::json j = {{"file", f.name()}, {"gguf_version", f.version()},
                      {"alignment", f.alignment()}, {"n_params", n_params},
                      {"tensor_types", type_counts}, {"metadata", meta}, {"tensors", tensors}};
  if (auto arch = f.get_string_opt("general.architecture")) j["architecture"] = *arch;
  // Whether this engine can run it, and why not.
  try {
    auto model = Model::load(f);
    auto tok = Tokenizer::from_gguf(f);
    j["runnable"] = true;
    j["n_vocab"] = model->hparams().n_vocab;
  } catch (const Error& e) {
    j["runnable"] = false;
    j["not_runnable_because"] = e.message();
  }
  return j;
}

void print_inspect_text(const nlohmann::json& j) {
  std::printf("file: %s\nGGUF version: %d\n", j["file"].get<std::string>().c_str(),
              j["gguf_version"].get<int>());
  if (j.contains("architecture"))
    std::printf("architecture: %s\n", j["architecture"].get<std::string>().c_str());
  std::printf("parameters: %llu\n", static_cast<unsigned long long>(j["n_params"].get<uint64_t>()));
  std::printf("runnable: %s\n", j["runnable"].get<bool>()
                                     ? "yes"
                                     : j["not_runnable_because"].get<std::string>().c_str());
  std::printf("metadata:\n");
  for (auto& [k, v] : j["metadata"].items())
    std::printf("  %s = %s\n", k.c_str(),
                v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  std::printf("tensors (%zu):\n", j["tensors"].size());
  for (auto& t : j["tensors"])
    std::printf("  %-40s %-6s %s\n", t["name"].get<std::string>().c_str(),
                t["type"].get<std::string>().c_str(), t["dims"].dump().c_str());
}

}  // namespace

void add_tokenize(CLI::App& app) {
  auto a = std::make_shared<TokenizeArgs>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text");
  a->model.add_to(cmd);
  auto* text = cmd->add_option("--text,-t", a->text, "Text to tokenize");
  auto* file = cmd->add_option("--file,-f", a->file, "Read the text from a file");
  cmd->add_flag("--no-bos", a->no_bos, "Do not add the BOS token");
  cmd->add_flag("--parse-special", a->parse_special, "Treat special-token text as tokens");
  cmd->add_flag("--json", a->json, "Print {\"tokens\":[...]}");
  cmd->callback([a, text, file] { run_tokenize(*a, text->count() > 0, file->count() > 0); });
}

void add_inspect(CLI::App& app) {
  auto model = std::make_shared<ModelArg>();
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("inspect", "Architecture, metadata, tensors and types");
  model->add_to(cmd);
  cmd->add_flag("--json", *json, "Print one JSON object");
  cmd->callback([model, json] {
    auto f = GgufFile::open(model->path, model->offset, model->size);
    nlohmann::json j = inspect_json(*f);
    if (*json) return print_json(j);
    print_inspect_text(j);
  });
}

}  // namespace galleon::engine
