#include "pkg/build.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "bundles/manifest.h"
#include "bundles/writer.h"
#include "pkg/conformance.h"
#include "pkg/http.h"
#include "runtime/error.h"
#include "runtime/ggml_type.h"
#include "runtime/gguf.h"
#include "runtime/llama2c.h"
#include "signing/files.h"
#include "signing/keys.h"
#include "signing/sha256.h"
#include "signing/signature.h"

namespace galleon::pkg {
namespace {

namespace fs = std::filesystem;
using bundles::Member;
using bundles::Role;
using bundles::SourcePin;

constexpr uint64_t kMaxRecipeSize = 1 << 20;

// A private folder under the home's tmp/, removed with everything in it.
class WorkDir {
 public:
  explicit WorkDir(const std::string& parent) {
    std::string tmpl = parent + "/build-XXXXXX";
    if (!mkdtemp(tmpl.data()))
      fail(ErrorKind::Io, parent + ": cannot create a build folder: " + std::strerror(errno));
    path_ = tmpl;
  }
  ~WorkDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void note(const BuildOptions& o, const std::string& line) {
  if (o.note) o.note(line);
}

std::string describe_pin(const SourcePin& pin) {
  return "source " + pin.file + " (sha256 " + pin.sha256 + ", " + std::to_string(pin.size) +
         " bytes)";
}

bool is_regular_of_size(const std::string& path, uint64_t size) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && uint64_t(st.st_size) == size;
}

// Hashes `path` when it has the pinned size; true when its bytes match the pin. Mismatches are
// added to `tried`.
bool matches_pin(const std::string& path, const SourcePin& pin, std::vector<std::string>& tried) {
  if (!is_regular_of_size(path, pin.size)) return false;
  signing::FileDigest d = signing::sha256_file(path);
  if (d.size == pin.size && d.sha256 == pin.sha256) return true;
  tried.push_back(path + " has sha256 " + d.sha256 + ", expected " + pin.sha256);
  return false;
}

// Files of the pinned size in `dir` (sorted, so the search order never depends on the folder).
std::vector<std::string> same_size_files(const std::string& dir, const SourcePin& pin) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string p = it->path().string();
    if (it->path().filename() != pin.file && is_regular_of_size(p, pin.size)) out.push_back(p);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string find_in_dir(const std::string& dir, const SourcePin& pin,
                        std::vector<std::string>& tried) {
  if (std::string by_name = dir + "/" + pin.file; matches_pin(by_name, pin, tried)) return by_name;
  for (const std::string& p : same_size_files(dir, pin))
    if (matches_pin(p, pin, tried)) return p;
  return "";
}

std::string blob_path(const Home& home, const std::string& sha256) {
  return home.blobs() + "/" + sha256.substr(0, 2) + "/" + sha256.substr(2);
}

// Tries each URL in turn; returns the verified download or "" (errors collected in `tried`).
std::string download_source(const SourcePin& pin, const BuildOptions& o, const std::string& dir,
                            std::vector<std::string>& tried, ErrorKind& kind) {
  const std::string dest = dir + "/download-" + pin.sha256;
  DownloadOptions d;
  d.max_size = pin.size;
  d.progress = o.progress;
  for (const std::string& url : pin.urls) {
    note(o, pin.file + ": downloading " + url);
    try {
      download(url, dest, d);
      signing::FileDigest got = signing::sha256_file(dest);
      if (got.size == pin.size && got.sha256 == pin.sha256) return dest;
      kind = ErrorKind::Invalid;
      tried.push_back(url + " gave sha256 " + got.sha256 + " (" + std::to_string(got.size) +
                      " bytes), expected " + pin.sha256);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::Io) throw;
      kind = e.kind();
      tried.push_back(e.message());
    }
    std::error_code ec;
    fs::remove(dest, ec);
  }
  return "";
}

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? sep : "") + parts[i];
  return out;
}

}  // namespace

std::string find_source(const SourcePin& pin, const BuildOptions& o, const Home& home,
                        const std::string& download_dir) {
  std::vector<std::string> tried;
  auto found = [&](const std::string& path, const std::string& how) {
    for (const std::string& t : tried) note(o, pin.file + ": not used: " + t);
    note(o, pin.file + ": using " + how + path);
    return path;
  };
  for (const std::string& dir : o.source_dirs) {
    if (std::string p = find_in_dir(dir, pin, tried); !p.empty()) return found(p, "");
  }
  if (std::string blob = blob_path(home, pin.sha256); matches_pin(blob, pin, tried))
    return found(blob, "the store's copy ");
  ErrorKind kind = ErrorKind::NotFound;
  if (o.offline || pin.urls.empty()) {
    tried.push_back(o.offline ? "offline: URLs not tried" : "the recipe gives no URL");
  } else if (std::string p = download_source(pin, o, download_dir, tried, kind); !p.empty()) {
    return found(p, "the download ");
  }
  fail(kind, describe_pin(pin) + " not found" + (tried.empty() ? "" : ": " + join(tried, "; ")));
}

namespace {

struct Inputs {
  std::string recipe_bytes;
  bundles::Recipe recipe;
  std::map<std::string, std::string> sources;  // source file name -> verified path
};

Inputs read_inputs(const BuildOptions& o, const Home& home, const WorkDir& work) {
  Inputs in;
  in.recipe_bytes = signing::read_file_capped(o.recipe_path, kMaxRecipeSize);
  in.recipe = bundles::parse_recipe(in.recipe_bytes, o.recipe_path);
  for (const SourcePin& pin : in.recipe.sources)
    in.sources[pin.file] = find_source(pin, o, home, work.path());
  return in;
}

std::string produce_weights(const Inputs& in, const WorkDir& work) {
  const bundles::ModelSpec& m = in.recipe.model;
  if (m.format == bundles::ModelSpec::Format::Gguf) return in.sources.at(m.file);
  std::string out = work.file("model.gguf");
  with_context("converting " + m.checkpoint + " and " + m.tokenizer, [&] {
    convert_llama2c_file(in.sources.at(m.checkpoint), in.sources.at(m.tokenizer), out);
  });
  return out;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

bundles::ModelFacts model_facts(const std::string& weights) {
  auto gguf = GgufFile::open(weights);
  bundles::ModelFacts f;
  f.architecture = gguf->get_string("general.architecture");
  std::set<std::string> types;
  for (const GgufTensorInfo& t : gguf->tensors()) {
    f.n_params += t.n_elements;
    types.insert(lower(type_name(t.type)));
  }
  f.tensor_types.assign(types.begin(), types.end());
  return f;
}

std::string write_conformance(const Inputs& in, const std::string& engine,
                              const std::string& weights, const WorkDir& work) {
  std::vector<std::pair<std::string, int32_t>> prompts;
  for (const auto& p : in.recipe.conformance) prompts.emplace_back(p.prompt, int32_t(p.max_tokens));
  Transcript t = run_conformance(engine, {weights, 0, 0}, prompts);
  std::string path = work.file("conformance.json");
  signing::write_file_exclusive(path, t.to_json(), 0644);
  return path;
}

std::string write_license(const Inputs& in, const WorkDir& work) {
  std::string path = work.file("LICENSE.txt");
  signing::write_file_exclusive(path, in.recipe.license + "\n", 0644);
  return path;
}

std::vector<signing::PrivateKey> load_keys(const std::vector<std::string>& key_files) {
  std::vector<signing::PrivateKey> keys;
  for (const std::string& f : key_files) keys.push_back(signing::PrivateKey::load(f));
  return keys;
}

// One signature per distinct key, sorted by key id.
std::vector<signing::Signature> sign_all(const std::vector<signing::PrivateKey>& keys,
                                         const std::string& bundle_id) {
  std::map<std::string, signing::Signature> by_key;
  for (const signing::PrivateKey& key : keys) {
    signing::Signature s = signing::sign_bundle_id(key, bundle_id);
    by_key.emplace(s.key_id, s);
  }
  std::vector<signing::Signature> out;
  for (auto& [id, s] : by_key) out.push_back(std::move(s));
  return out;
}

std::string default_out_path(const bundles::Recipe& r) {
  return r.name + "-" + r.version + ".galleon";
}

}  // namespace

namespace {

// A member to be: its path in the bundle, its role and the file holding its bytes.
struct PlannedMember {
  std::string path;
  Role role;
  std::string file;
};

std::vector<PlannedMember> plan_members(const BuildOptions& o, const Inputs& in,
                                        const WorkDir& work) {
  std::string recipe_copy = work.file("recipe.yaml");
  signing::write_file_exclusive(recipe_copy, in.recipe_bytes, 0644);
  std::string weights = produce_weights(in, work);
  std::vector<PlannedMember> members{
      {"engine/galleon-engine", Role::Engine, o.engine_path},
      {"model.gguf", Role::Weights, weights},
      {"recipe.yaml", Role::Recipe, recipe_copy},
      {"conformance.json", Role::Conformance, write_conformance(in, o.engine_path, weights, work)},
      {"LICENSE.txt", Role::License, write_license(in, work)},
  };
  // The transcript comes from the CPU engine; `galleon check --device cuda` replays it on a GPU.
  if (!o.cuda_engine_path.empty())
    members.push_back({"engine/galleon-engine-cuda", Role::EngineCuda, o.cuda_engine_path});
  return members;
}

bundles::Manifest make_manifest(const bundles::Recipe& recipe,
                                const std::vector<PlannedMember>& members) {
  bundles::Manifest m;
  m.name = recipe.name;
  m.version = recipe.version;
  m.description = recipe.description;
  m.license = recipe.license;
  m.engine.platform = bundles::host_platform();
  m.recipe_sha256 = recipe.digest();
  m.defaults = recipe.defaults;
  for (const PlannedMember& p : members) {
    m.members.push_back(bundles::describe_file(p.path, p.role, p.file));
    if (p.role == Role::Weights) m.model = model_facts(p.file);
  }
  m.sort_members();
  m.validate();
  return m;
}

void require_engine(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    fail(ErrorKind::NotFound, "'" + path + "': the engine to bundle is not a file");
}

}  // namespace

BuildResult build_bundle(const BuildOptions& o, const Home& home) {
  require_engine(o.engine_path);
  if (!o.cuda_engine_path.empty()) require_engine(o.cuda_engine_path);
  const std::vector<signing::PrivateKey> keys = load_keys(o.key_files);
  ensure_home(home);
  WorkDir work(home.tmp());
  const Inputs in = read_inputs(o, home, work);
  const std::vector<PlannedMember> members = plan_members(o, in, work);
  const bundles::Manifest m = make_manifest(in.recipe, members);
  std::map<std::string, bundles::MemberSource> sources;
  for (const PlannedMember& p : members) sources[p.path] = {p.file, 0};

  BuildResult r;
  r.out_path = o.out_path.empty() ? default_out_path(in.recipe) : o.out_path;
  r.bundle_id = bundles::write_bundle(r.out_path, m, sign_all(keys, m.id()), sources).bundle_id;
  return r;
}

}  // namespace galleon::pkg
