#include "bundles/recipe.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <map>
#include <set>

#include "bundles/canonical_json.h"
#include "runtime/error.h"
#include "signing/encoding.h"
#include "signing/files.h"
#include "signing/sha256.h"

namespace galleon::bundles {

namespace {

constexpr uint64_t kMaxRecipeFile = 1 << 20;

// Error helper: every message starts with "origin:line:col: ".
class Where {
 public:
  explicit Where(std::string origin) : origin_(std::move(origin)) {}
  [[noreturn]] void fail(const YAML::Mark& mark, const std::string& what) const {
    std::string pos = mark.is_null() ? "" : std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1) + ":";
    throw Error(ErrorKind::Invalid, origin_ + ":" + pos + " " + what);
  }

 private:
  std::string origin_;
};

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null: return "nothing";
    case YAML::NodeType::Scalar: return "'" + node.Scalar() + "'";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    default: return "an undefined value";
  }
}

// A YAML mapping read strictly: each key once, only the allowed keys, required keys present.
class MapReader {
 public:
  MapReader(const YAML::Node& node, std::string what, const Where& where, std::set<std::string> allowed)
      : node_(node), what_(std::move(what)), where_(where) {
    if (!node.IsMap()) where_.fail(node.Mark(), what_ + ": expected a mapping, found " + describe(node));
    std::set<std::string> seen;
    for (const auto& kv : node) {
      const std::string key = kv.first.Scalar();
      if (!kv.first.IsScalar()) where_.fail(kv.first.Mark(), what_ + ": keys must be plain words");
      if (!allowed.count(key)) where_.fail(kv.first.Mark(), what_ + ": unknown key '" + key + "' (allowed: " + join(allowed) + ")");
      if (!seen.insert(key).second) where_.fail(kv.first.Mark(), what_ + ": key '" + key + "' appears twice");
      values_.emplace(key, kv.second);
      key_marks_.emplace(key, kv.first.Mark());
    }
  }

  bool has(const std::string& key) const { return values_.count(key) != 0; }

  const YAML::Node& get(const std::string& key) const {
    auto it = values_.find(key);
    if (it == values_.end()) where_.fail(node_.Mark(), what_ + ": missing required key '" + key + "'");
    return it->second;
  }

  std::string field(const std::string& key) const { return what_ + "." + key; }

  // Where to point for `key`'s value: the value itself, or the key when the value is empty.
  YAML::Mark mark(const std::string& key) const {
    const YAML::Node& v = get(key);
    return v.IsNull() ? key_marks_.at(key) : v.Mark();
  }

  std::string str(const std::string& key) const {
    const YAML::Node& v = get(key);
    if (!v.IsScalar()) where_.fail(mark(key), field(key) + ": expected text, found " + describe(v));
    return v.Scalar();
  }

  // A non-negative decimal integer written as plain digits.
  uint64_t u64(const std::string& key, uint64_t min, uint64_t max) const {
    const YAML::Node& v = get(key);
    const std::string text = v.IsScalar() ? v.Scalar() : "";
    bool digits = !text.empty() && text.size() <= 20 && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
    uint64_t value = 0;
    if (digits) {
      try {
        value = std::stoull(text);
      } catch (const std::exception&) {
        digits = false;
      }
    }
    if (!digits || value < min || value > max)
      where_.fail(mark(key), field(key) + ": expected an integer from " + std::to_string(min) + " to " +
                                std::to_string(max) + ", found " + describe(v));
    return value;
  }

  const YAML::Node& node() const { return node_; }

 private:
  static std::string join(const std::set<std::string>& keys) {
    std::string out;
    for (const auto& k : keys) out += (out.empty() ? "" : ", ") + k;
    return out;
  }

  YAML::Node node_;
  std::string what_;
  const Where& where_;
  std::map<std::string, YAML::Node> values_;
  std::map<std::string, YAML::Mark> key_marks_;
};

const YAML::Node& require_list(const YAML::Node& node, const std::string& what, const Where& where) {
  if (!node.IsSequence() || node.size() == 0)
    where.fail(node.Mark(), what + ": expected a non-empty list, found " + describe(node));
  return node;
}

bool is_plain_file_name(std::string_view name) {
  auto ok = [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' || c == '+';
  };
  return !name.empty() && name.size() <= 100 && name != "." && name != ".." && std::all_of(name.begin(), name.end(), ok);
}

bool is_url(std::string_view url) {
  bool scheme = url.substr(0, 8) == "https://" || url.substr(0, 7) == "http://";
  return scheme && is_single_line(url, 2048) && url.find(' ') == std::string_view::npos;
}

SourcePin parse_source(const YAML::Node& node, size_t index, const Where& where) {
  MapReader m(node, "sources[" + std::to_string(index) + "]", where, {"file", "sha256", "size", "urls"});
  SourcePin pin;
  pin.file = m.str("file");
  if (!is_plain_file_name(pin.file))
    where.fail(m.mark("file"), m.field("file") + ": expected a plain file name of [A-Za-z0-9._+-], found '" + pin.file + "'");
  pin.sha256 = m.str("sha256");
  if (!signing::is_sha256_hex(pin.sha256))
    where.fail(m.mark("sha256"), m.field("sha256") + ": expected 64 lowercase hex digits, found '" + pin.sha256 + "'");
  pin.size = m.u64("size", 1, UINT64_MAX / 2);
  if (m.has("urls")) {
    const YAML::Node& urls = require_list(m.get("urls"), m.field("urls"), where);
    for (const auto& u : urls) {
      if (!u.IsScalar() || !is_url(u.Scalar()))
        where.fail(u.Mark(), m.field("urls") + ": expected an http(s) URL, found " + describe(u));
      pin.urls.push_back(u.Scalar());
    }
  }
  return pin;
}

std::vector<SourcePin> parse_sources(const YAML::Node& node, const Where& where) {
  std::vector<SourcePin> sources;
  std::set<std::string> names;
  for (const auto& item : require_list(node, "sources", where)) {
    sources.push_back(parse_source(item, sources.size(), where));
    if (!names.insert(sources.back().file).second)
      where.fail(item.Mark(), "sources: file '" + sources.back().file + "' is listed twice");
  }
  return sources;
}

std::string source_ref(const MapReader& m, const std::string& key, const std::vector<SourcePin>& sources, const Where& where) {
  std::string name = m.str(key);
  bool known = std::any_of(sources.begin(), sources.end(), [&](const SourcePin& p) { return p.file == name; });
  if (!known) where.fail(m.mark(key), m.field(key) + ": '" + name + "' is not one of the sources");
  return name;
}

ModelSpec parse_model(const YAML::Node& node, const std::vector<SourcePin>& sources, const Where& where) {
  if (!node.IsMap()) where.fail(node.Mark(), "model: expected a mapping, found " + describe(node));
  const YAML::Node format = node["format"];
  std::string fmt = format.IsScalar() ? format.Scalar() : "";
  ModelSpec spec;
  if (fmt == "gguf") {
    MapReader m(node, "model", where, {"format", "file"});
    spec.format = ModelSpec::Format::Gguf;
    spec.file = source_ref(m, "file", sources, where);
  } else if (fmt == "llama2c") {
    MapReader m(node, "model", where, {"format", "checkpoint", "tokenizer"});
    spec.format = ModelSpec::Format::Llama2c;
    spec.checkpoint = source_ref(m, "checkpoint", sources, where);
    spec.tokenizer = source_ref(m, "tokenizer", sources, where);
  } else {
    where.fail(format.IsDefined() ? format.Mark() : node.Mark(),
               "model.format: expected 'gguf' or 'llama2c', found " + (format.IsDefined() ? describe(format) : std::string("nothing")));
  }
  return spec;
}

std::string decimal(const MapReader& m, const std::string& key, const Where& where) {
  std::string text = normalize_decimal(m.str(key));
  if (text.empty()) where.fail(m.mark(key), m.field(key) + ": expected a plain decimal such as 0.8, found " + describe(m.get(key)));
  return text;
}

SamplingDefaults parse_defaults(const YAML::Node& node, const Where& where) {
  MapReader m(node, "defaults", where, {"temperature", "top_p", "top_k", "seed", "max_tokens"});
  SamplingDefaults d;
  d.temperature = decimal(m, "temperature", where);
  d.top_p = decimal(m, "top_p", where);
  d.top_k = static_cast<int64_t>(m.u64("top_k", 0, 1u << 20));
  d.seed = m.u64("seed", 0, UINT64_MAX);
  d.max_tokens = static_cast<int64_t>(m.u64("max_tokens", 1, 1u << 20));
  std::string problem = d.problem();
  if (!problem.empty()) where.fail(m.mark(problem.substr(0, problem.find(':'))), "defaults." + problem);
  return d;
}

std::vector<ConformancePrompt> parse_conformance(const YAML::Node& node, const Where& where) {
  std::vector<ConformancePrompt> prompts;
  for (const auto& item : require_list(node, "conformance", where)) {
    MapReader m(item, "conformance[" + std::to_string(prompts.size()) + "]", where, {"prompt", "max_tokens"});
    ConformancePrompt p;
    p.prompt = m.str("prompt");
    if (p.prompt.empty() || p.prompt.size() > 4096)
      where.fail(m.mark("prompt"), m.field("prompt") + ": expected 1 to 4096 bytes of text");
    p.max_tokens = static_cast<int64_t>(m.u64("max_tokens", 1, 4096));
    prompts.push_back(std::move(p));
  }
  return prompts;
}

std::string text_field(const MapReader& m, const std::string& key, size_t max_len, const Where& where) {
  std::string text = m.str(key);
  if (!is_single_line(text, max_len))
    where.fail(m.mark(key), key + ": expected one line of 1 to " + std::to_string(max_len) + " bytes");
  return text;
}

Recipe parse_root(const YAML::Node& root, const Where& where) {
  MapReader m(root, "recipe", where,
              {"name", "version", "description", "license", "sources", "model", "defaults", "conformance"});
  Recipe r;
  r.name = m.str("name");
  if (!is_valid_name(r.name))
    where.fail(m.mark("name"), "name: expected 1 to 64 of [a-z0-9._-] starting with a letter or digit, found '" + r.name + "'");
  r.version = m.str("version");
  if (!is_valid_version(r.version))
    where.fail(m.mark("version"), "version: expected digits and dots with an optional -suffix (e.g. 1.0.0, 2.1-rc1), found '" + r.version + "'");
  r.description = text_field(m, "description", 1024, where);
  r.license = text_field(m, "license", 256, where);
  r.sources = parse_sources(m.get("sources"), where);
  r.model = parse_model(m.get("model"), r.sources, where);
  r.defaults = parse_defaults(m.get("defaults"), where);
  r.conformance = parse_conformance(m.get("conformance"), where);
  return r;
}

}  // namespace

Recipe parse_recipe(std::string_view yaml_text, std::string_view origin) {
  Where where{std::string(origin)};
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    where.fail(e.mark, "YAML syntax: " + e.msg);
  }
  try {
    return parse_root(root, where);
  } catch (const YAML::Exception& e) {
    where.fail(e.mark, "YAML: " + e.msg);
  }
}

Recipe load_recipe(const std::string& path) {
  return parse_recipe(signing::read_file_capped(path, kMaxRecipeFile), path);
}

const SourcePin& Recipe::source(std::string_view file) const {
  auto it = std::find_if(sources.begin(), sources.end(), [&](const SourcePin& p) { return p.file == file; });
  if (it == sources.end()) throw Error(ErrorKind::NotFound, "recipe " + name + ": no source '" + std::string(file) + "'");
  return *it;
}

nlohmann::json Recipe::to_json() const {
  using nlohmann::json;
  json srcs = json::array();
  for (const SourcePin& p : sources)
    srcs.push_back({{"file", p.file}, {"sha256", p.sha256}, {"size", p.size}, {"urls", p.urls}});
  json mdl = model.format == ModelSpec::Format::Gguf
                 ? json{{"format", "gguf"}, {"file", model.file}}
                 : json{{"format", "llama2c"}, {"checkpoint", model.checkpoint}, {"tokenizer", model.tokenizer}};
  json conf = json::array();
  for (const ConformancePrompt& p : conformance) conf.push_back({{"max_tokens", p.max_tokens}, {"prompt", p.prompt}});
  return json{{"format", std::string(kRecipeFormat)},
              {"name", name},
              {"version", version},
              {"description", description},
              {"license", license},
              {"sources", srcs},
              {"model", mdl},
              {"defaults", defaults.to_json()},
              {"conformance", conf}};
}

std::string Recipe::canonical_json() const { return canonical_dump(to_json()); }

std::string Recipe::digest() const { return signing::sha256_hex(canonical_json()); }

}  // namespace galleon::bundles
