#include "bundles/manifest.h"

#include <algorithm>
#include <iterator>
#include <set>

#include "bundles/canonical_json.h"
#include "bundles/member_path.h"
#include "runtime/error.h"
#include "signing/encoding.h"
#include "signing/sha256.h"

namespace galleon::bundles {

using nlohmann::json;

namespace {

constexpr const char* kRoleNames[] = {"engine", "weights", "tokenizer", "recipe", "conformance", "license",
                                     "engine-cuda"};

[[noreturn]] void invalid(const std::string& field, const std::string& expected) {
  throw Error(ErrorKind::Invalid, field + ": expected " + expected);
}

bool is_platform(std::string_view p) {
  size_t dash = p.find('-');
  auto ok = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; };
  return dash != std::string_view::npos && dash > 0 && dash + 1 < p.size() && p.size() <= 64 &&
         std::all_of(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(dash), ok) &&
         std::all_of(p.begin() + static_cast<std::ptrdiff_t>(dash) + 1, p.end(), ok);
}

bool is_word(std::string_view s, size_t max_len) {
  auto ok = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'; };
  return !s.empty() && s.size() <= max_len && std::all_of(s.begin(), s.end(), ok);
}

void validate_member(const Member& m, const std::string& field) {
  if (!is_member_path(m.path))
    invalid(field + ".path", "a relative path of [A-Za-z0-9._+-] components, at most 100 bytes, not MANIFEST.json or "
                             "under signatures/; found " + quote_path(m.path));
  if (!signing::is_sha256_hex(m.sha256)) invalid(field + ".sha256", "64 lowercase hex digits");
}

void validate_members(const std::vector<Member>& members) {
  if (members.empty()) invalid("members", "at least one member");
  std::set<Role> unique_roles;
  for (size_t i = 0; i < members.size(); ++i) {
    std::string field = "members[" + std::to_string(i) + "]";
    validate_member(members[i], field);
    if (i > 0 && !(members[i - 1].path < members[i].path))
      invalid(field + ".path", "members sorted bytewise by path without duplicates; " + quote_path(members[i].path) +
                                   " follows " + quote_path(members[i - 1].path));
    Role r = members[i].role;
    if (r != Role::Tokenizer && r != Role::License && !unique_roles.insert(r).second)
      invalid(field + ".role", std::string("at most one member with role ") + role_name(r));
  }
}

void validate_model(const ModelFacts& model) {
  if (!is_word(model.architecture, 64)) invalid("model.architecture", "a word of [a-z0-9._-] such as \"llama\"");
  for (size_t i = 0; i < model.tensor_types.size(); ++i) {
    if (!is_word(model.tensor_types[i], 32)) invalid("model.tensor_types[" + std::to_string(i) + "]", "a type name such as \"q8_0\"");
    if (i > 0 && !(model.tensor_types[i - 1] < model.tensor_types[i]))
      invalid("model.tensor_types", "sorted, distinct type names");
  }
}

// Reads a JSON object strictly: every key must be consumed, and each accessor checks the type.
class ObjectReader {
 public:
  ObjectReader(const json& j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j.is_object()) invalid(where_.empty() ? "manifest" : where_, "a JSON object");
  }
  std::string field(const std::string& key) const { return where_.empty() ? key : where_ + "." + key; }
  const json& get(const std::string& key) {
    auto it = j_.find(key);
    if (it == j_.end()) invalid(field(key), "a value (the field is missing)");
    used_.insert(key);
    return *it;
  }
  std::string str(const std::string& key) {
    const json& v = get(key);
    if (!v.is_string()) invalid(field(key), "a string");
    return v.get<std::string>();
  }
  uint64_t u64(const std::string& key) {
    const json& v = get(key);
    if (!v.is_number_unsigned()) invalid(field(key), "a non-negative integer");
    return v.get<uint64_t>();
  }
  int64_t i64(const std::string& key) {
    const json& v = get(key);
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > INT64_MAX))
      invalid(field(key), "an integer");
    return v.get<int64_t>();
  }
  const json& array(const std::string& key) {
    const json& v = get(key);
    if (!v.is_array()) invalid(field(key), "an array");
    return v;
  }
  void finish() const {
    for (const auto& [key, value] : j_.items())
      if (!used_.count(key)) throw Error(ErrorKind::Invalid, field(key) + ": unknown field");
  }

 private:
  const json& j_;
  std::string where_;
  std::set<std::string> used_;
};

Member member_from_json(const json& j, const std::string& where) {
  ObjectReader r(j, where);
  Member m;
  m.path = r.str("path");
  m.size = r.u64("size");
  m.sha256 = r.str("sha256");
  std::string role = r.str("role");
  auto parsed = parse_role(role);
  if (!parsed) invalid(r.field("role"), "one of engine, weights, tokenizer, recipe, conformance, license; found \"" + role + "\"");
  m.role = *parsed;
  r.finish();
  return m;
}

SamplingDefaults defaults_from_json(const json& j) {
  ObjectReader r(j, "defaults");
  SamplingDefaults d;
  d.max_tokens = r.i64("max_tokens");
  d.seed = r.u64("seed");
  d.temperature = r.str("temperature");
  d.top_k = r.i64("top_k");
  d.top_p = r.str("top_p");
  r.finish();
  return d;
}

Manifest manifest_from_json(const json& j) {
  ObjectReader r(j, "");
  if (r.str("format") != kManifestFormat) invalid("format", "\"" + std::string(kManifestFormat) + "\"");
  Manifest m;
  m.name = r.str("name");
  m.version = r.str("version");
  m.description = r.str("description");
  m.license = r.str("license");
  const json& members = r.array("members");
  for (size_t i = 0; i < members.size(); ++i) m.members.push_back(member_from_json(members[i], "members[" + std::to_string(i) + "]"));
  ObjectReader engine(r.get("engine"), "engine");
  m.engine.abi = engine.str("abi");
  m.engine.platform = engine.str("platform");
  engine.finish();
  ObjectReader model(r.get("model"), "model");
  m.model.architecture = model.str("architecture");
  m.model.n_params = model.u64("n_params");
  for (const json& t : model.array("tensor_types")) {
    if (!t.is_string()) invalid("model.tensor_types", "an array of strings");
    m.model.tensor_types.push_back(t.get<std::string>());
  }
  model.finish();
  m.recipe_sha256 = r.str("recipe_sha256");
  m.defaults = defaults_from_json(r.get("defaults"));
  r.finish();
  return m;
}

}  // namespace

const char* role_name(Role role) { return kRoleNames[static_cast<int>(role)]; }

std::optional<Role> parse_role(std::string_view name) {
  for (int i = 0; i < int(std::size(kRoleNames)); ++i)
    if (name == kRoleNames[i]) return static_cast<Role>(i);
  return std::nullopt;
}

void Manifest::validate() const {
  if (!is_valid_name(name)) invalid("name", "1 to 64 of [a-z0-9._-] starting with a letter or digit");
  if (!is_valid_version(version)) invalid("version", "digits and dots with an optional -suffix");
  if (!is_single_line(description, 1024)) invalid("description", "one line of 1 to 1024 bytes");
  if (!is_single_line(license, 256)) invalid("license", "one line of 1 to 256 bytes");
  validate_members(members);
  if (!is_platform(engine.platform)) invalid("engine.platform", "\"<os>-<arch>\" such as \"linux-x86_64\"");
  if (engine.abi != kEngineAbi) invalid("engine.abi", "\"" + std::string(kEngineAbi) + "\"");
  validate_model(model);
  if (!signing::is_sha256_hex(recipe_sha256)) invalid("recipe_sha256", "64 lowercase hex digits");
  std::string problem = defaults.problem();
  if (!problem.empty()) throw Error(ErrorKind::Invalid, "defaults." + problem);
}

json Manifest::to_json() const {
  json mem = json::array();
  for (const Member& m : members)
    mem.push_back({{"path", m.path}, {"role", role_name(m.role)}, {"sha256", m.sha256}, {"size", m.size}});
  return json{{"format", std::string(kManifestFormat)},
              {"name", name},
              {"version", version},
              {"description", description},
              {"license", license},
              {"members", mem},
              {"engine", {{"abi", engine.abi}, {"platform", engine.platform}}},
              {"model", {{"architecture", model.architecture}, {"n_params", model.n_params}, {"tensor_types", model.tensor_types}}},
              {"recipe_sha256", recipe_sha256},
              {"defaults", defaults.to_json()}};
}

std::string Manifest::to_bytes() const {
  with_context("manifest", [&] { validate(); });
  return canonical_dump(to_json());
}

std::string Manifest::id() const { return bundle_id_of(to_bytes()); }

const Member* Manifest::find(std::string_view path) const {
  auto it = std::find_if(members.begin(), members.end(), [&](const Member& m) { return m.path == path; });
  return it == members.end() ? nullptr : &*it;
}

const Member* Manifest::find_role(Role role) const {
  auto it = std::find_if(members.begin(), members.end(), [&](const Member& m) { return m.role == role; });
  return it == members.end() ? nullptr : &*it;
}

void Manifest::sort_members() {
  std::sort(members.begin(), members.end(), [](const Member& a, const Member& b) { return a.path < b.path; });
}

Manifest parse_manifest(std::string_view bytes, std::string_view origin) {
  return with_context(origin, [&] {
    if (bytes.size() > kMaxManifestSize)
      throw Error(ErrorKind::Invalid, "larger than " + std::to_string(kMaxManifestSize) + " bytes");
    Manifest m = manifest_from_json(parse_canonical(bytes, "canonical form"));
    m.validate();
    return m;
  });
}

std::string bundle_id_of(std::string_view manifest_bytes) { return "sha256:" + signing::sha256_hex(manifest_bytes); }

Member describe_file(std::string path, Role role, const std::string& file) {
  signing::FileDigest d = signing::sha256_file(file);
  return Member{std::move(path), d.size, d.sha256, role};
}

std::string host_platform() {
#if defined(__x86_64__)
  const char* arch = "x86_64";
#elif defined(__aarch64__)
  const char* arch = "aarch64";
#else
  const char* arch = "unknown";
#endif
#if defined(__linux__)
  return std::string("linux-") + arch;
#else
  return std::string("unknown-") + arch;
#endif
}

}  // namespace galleon::bundles
