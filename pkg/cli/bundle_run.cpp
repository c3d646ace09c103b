#include "pkg/cli/bundle_run.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "bundles/canonical_json.h"
#include "pkg/process.h"

#include "bundles/reader.h"
#include "pkg/cli/engine_exec.h"
#include "pkg/home.h"
#include "pkg/store.h"
#include "runtime/error.h"
#include "signing/files.h"
#include "signing/sha256.h"
#include "signing/trust.h"

extern char** environ;

namespace galleon::cli {
namespace {

using nlohmann::json;

// An anonymous in-memory executable file: the engine bytes are hashed and executed from the
// same copy, so nothing can change them in between.
class MemFile {
 public:
  // `inheritable`: a child process may exec it as /proc/self/fd/N (run --record).
  MemFile(const char* name, bool inheritable)
      : fd_(memfd_create(name, inheritable ? 0u : unsigned(MFD_CLOEXEC))) {
    if (fd_.get() < 0) fail(ErrorKind::Io, std::string("memfd_create: ") + std::strerror(errno));
  }
  std::string proc_path() const { return "/proc/self/fd/" + std::to_string(fd_.get()); }
  void write(const void* data, size_t size) { signing::write_all(fd_.get(), data, size, "memfd"); }
  [[noreturn]] void exec(const std::string& what, const std::vector<std::string>& args) {
    std::vector<char*> argv;
    std::string argv0 = "galleon-engine";
    argv.push_back(argv0.data());
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    fexecve(fd_.get(), argv.data(), environ);
    fail(ErrorKind::Io, what + ": cannot run the engine: " + std::strerror(errno));
  }

 private:
  signing::UniqueFd fd_;
};

class MemFileSink final : public bundles::MemberSink {
 public:
  explicit MemFileSink(MemFile& f) : file_(f) {}
  void write(const void* data, size_t size) override { file_.write(data, size); }

 private:
  MemFile& file_;
};

bool has_option(const std::vector<std::string>& args, const std::string& flag, char short_flag) {
  return std::any_of(args.begin(), args.end(), [&](const std::string& a) {
    if (a == flag || a.rfind(flag + "=", 0) == 0) return true;
    return short_flag && a.size() >= 2 && a[0] == '-' && a[1] == short_flag;
  });
}

bool looks_like_bundle(const std::string& path) {
  signing::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  char head[512];
  if (fd.get() < 0 || ::pread(fd.get(), head, sizeof head, 0) != ssize_t(sizeof head)) return false;
  return std::memcmp(head, "MANIFEST.json\0", 14) == 0 && std::memcmp(head + 257, "ustar", 5) == 0;
}

void check_platform(const bundles::Manifest& m, const std::string& who) {
  if (m.engine.platform != bundles::host_platform())
    fail(ErrorKind::Unsupported, who + ": the bundle's engine is built for " + m.engine.platform +
                                     ", this host is " + bundles::host_platform());
}

const bundles::Member& need_role(const bundles::Manifest& m, bundles::Role role,
                                 const std::string& who) {
  const bundles::Member* member = m.find_role(role);
  if (!member)
    fail(ErrorKind::Invalid, who + ": the bundle has no " + bundles::role_name(role) + " member");
  return *member;
}

// The engine member that runs `user`'s arguments: the CUDA engine (role engine-cuda) for
// --device cuda[:N], else the static CPU engine.
const bundles::Member& engine_member(const bundles::Manifest& m,
                                     const std::vector<std::string>& user,
                                     const std::string& who) {
  const std::string device = device_option(user);
  if (!is_cuda_device(device)) return need_role(m, bundles::Role::Engine, who);
  const bundles::Member* member = m.find_role(bundles::Role::EngineCuda);
  if (!member)
    fail(ErrorKind::Unsupported,
         who + ": --device " + device + ": the bundle has no CUDA engine (member role "
               "engine-cuda): it was built by a galleon without the CUDA backend; run it with "
               "--device cpu");
  return *member;
}

// A bundle run ready to start: the verified engine in memory and its arguments.
struct PreparedRun {
  std::string who;
  std::string bundle_id;
  std::string engine_sha256;
  std::unique_ptr<MemFile> engine;
  std::vector<std::string> model_args;  // "run", the model, its offset and size
  std::vector<std::string> args;        // recipe defaults not given, then the user's

  std::vector<std::string> engine_args() const {
    std::vector<std::string> all = model_args;
    all.insert(all.end(), args.begin(), args.end());
    return all;
  }
};

void set_args(PreparedRun& run, const std::string& manifest_bytes, std::vector<std::string> model,
              const std::vector<std::string>& user) {
  run.model_args = std::move(model);
  run.args = default_args(manifest_bytes, user);
  run.args.insert(run.args.end(), user.begin(), user.end());
}

PreparedRun prepare_installed(pkg::Store& store, const pkg::BundleRow& b,
                              const std::vector<std::string>& user, bool inheritable) {
  PreparedRun run;
  run.who = b.name + " " + b.version + " (" + b.id + ")";
  run.bundle_id = b.id;
  auto m = bundles::parse_manifest(b.manifest_bytes, b.id);
  bool host_engine = m.engine.platform != bundles::host_platform();
  if (host_engine && is_cuda_device(device_option(user)))
    fail(ErrorKind::Unsupported, run.who + ": the bundle's engines are built for " +
                                     m.engine.platform + ", this host is " +
                                     bundles::host_platform() + "; its CUDA engine cannot run here");
  if (host_engine && b.check_result != pkg::kCheckHostEngine)
    fail(ErrorKind::Unsupported,
         run.who + ": the bundle's engine is built for " + m.engine.platform + ", this host is " +
             bundles::host_platform() + "; this host's engine may run it once it reproduces the "
             "conformance transcript: galleon check " + b.name + "@" + b.version);
  const auto& engine = engine_member(m, user, run.who);
  const auto& weights = need_role(m, bundles::Role::Weights, run.who);
  std::string engine_path = host_engine ? sibling_engine_path() : store.blob_path(engine.sha256);
  run.engine = std::make_unique<MemFile>("galleon-engine", inheritable);
  signing::UniqueFd in = signing::open_read(engine_path);
  signing::Sha256 hash;
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(in.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(ErrorKind::Io, engine_path + ": cannot read: " + std::strerror(errno));
    if (n == 0) break;
    hash.update(buf.data(), size_t(n));
    run.engine->write(buf.data(), size_t(n));
  }
  std::string got = hash.finish_hex();
  if (host_engine && got != b.check_engine)
    fail(ErrorKind::Unsupported, engine_path + ": this host's engine changed since it reproduced "
                                 "the transcript of " + run.who + "; run galleon check " + b.name +
                                 "@" + b.version + " again");
  if (!host_engine && got != engine.sha256)
    fail(ErrorKind::Invalid, engine_path + ": the engine blob of " + run.who +
                                 " is damaged (sha256 " + got + ", expected " + engine.sha256 +
                                 "); run galleon fsck");
  run.engine_sha256 = got;
  set_args(run, b.manifest_bytes, {"run", store.blob_path(weights.sha256)}, user);
  return run;
}

void require_trust(const bundles::BundleReader& reader, bool allow_untrusted) {
  signing::TrustStore trust(pkg::home_from_env().trust());
  auto policy = signing::check_policy(trust, reader.id(), reader.signatures());
  if (policy.threshold_met) return;
  if (!allow_untrusted)
    fail(ErrorKind::Untrusted, reader.path() + ": refusing to run the engine of an untrusted "
                                               "bundle: " + policy.explain() +
                                               "\n(pass --allow-untrusted to run it anyway)");
  std::fprintf(stderr, "galleon: WARNING: running an UNTRUSTED bundle's engine: %s\n",
               reader.path().c_str());
}

PreparedRun prepare_file(const std::string& path, std::vector<std::string> user, bool inheritable) {
  bool allow_untrusted = std::erase(user, std::string("--allow-untrusted")) > 0;
  bundles::BundleReader reader(path);
  const auto& m = reader.manifest();
  PreparedRun run;
  run.who = path;
  run.bundle_id = reader.id();
  check_platform(m, path);
  require_trust(reader, allow_untrusted);
  const auto& engine = engine_member(m, user, path);
  const auto& weights = need_role(m, bundles::Role::Weights, path);
  run.engine = std::make_unique<MemFile>("galleon-engine", inheritable);
  MemFileSink sink(*run.engine);
  reader.extract_member(engine.path, sink);  // verified against the manifest digest
  run.engine_sha256 = engine.sha256;
  uint64_t offset = 0;
  for (const auto& loc : reader.locate_members())
    if (loc.path == weights.path) offset = loc.offset;
  signing::FileDigest d = signing::sha256_file_range(path, offset, weights.size);
  if (d.sha256 != weights.sha256)
    fail(ErrorKind::Invalid, path + ": member " + weights.path + ": sha256 " + d.sha256 +
                                 ", expected " + weights.sha256);
  set_args(run, reader.manifest_bytes(),
           {"run", path, "--model-offset", std::to_string(offset), "--model-size",
            std::to_string(weights.size)},
           user);
  return run;
}


// The value of option `flag` (or `short_flag`) in args: "--flag V", "--flag=V", "-s V".
std::optional<std::string> option_value(const std::vector<std::string>& args,
                                        const std::string& flag, const std::string& short_flag) {
  for (size_t i = 0; i < args.size(); ++i) {
    if ((args[i] == flag || args[i] == short_flag) && i + 1 < args.size()) return args[i + 1];
    if (args[i].rfind(flag + "=", 0) == 0) return args[i].substr(flag.size() + 1);
  }
  return std::nullopt;
}

// Replaces "--file F" by "--prompt <contents of F>" so that a record holds its prompt.
std::string inline_prompt(std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    bool split = (args[i] == "--file" || args[i] == "-f") && i + 1 < args.size();
    bool joined = args[i].rfind("--file=", 0) == 0;
    if (!split && !joined) continue;
    std::string file = split ? args[i + 1] : args[i].substr(7);
    std::ifstream in(file, std::ios::binary);
    if (!in) fail(ErrorKind::NotFound, file + ": cannot open the prompt file");
    std::ostringstream text;
    text << in.rdbuf();
    args.erase(args.begin() + long(i), args.begin() + long(i) + (split ? 2 : 1));
    args.insert(args.end(), {"--prompt", text.str()});
    return text.str();
  }
  auto p = option_value(args, "--prompt", "-p");
  if (!p) fail(ErrorKind::Usage, "give --prompt or --file");
  return *p;
}

template <class T>
std::vector<T> json_list(const json& j, const char* key) {
  if (!j.contains(key)) fail(ErrorKind::Invalid, std::string("engine output lacks ") + key);
  return j.at(key).get<std::vector<T>>();
}

// Runs the engine as a child with --json and collects what a run record holds. `json_out`
// receives the engine's JSON text.
RunRecord run_captured(const PreparedRun& run, std::string* json_out) {
  std::vector<std::string> argv{run.engine->proc_path()};
  for (const auto& a : run.engine_args()) argv.push_back(a);
  if (std::find(run.args.begin(), run.args.end(), "--json") == run.args.end())
    argv.push_back("--json");
  pkg::ProcessResult p = pkg::run_process(argv);
  std::cerr << p.err;
  if (p.exit_code != 0)
    fail(p.exit_code >= 1 && p.exit_code <= 9 ? ErrorKind(p.exit_code) : ErrorKind::Internal,
         run.who + ": the engine failed (exit " + std::to_string(p.exit_code) + ")");
  json j;
  try {
    j = json::parse(p.out);
    RunRecord r;
    r.bundle_id = run.bundle_id;
    r.engine_sha256 = run.engine_sha256;
    r.args = run.args;
    r.tokens = json_list<int32_t>(j, "tokens");
    r.prompt_tokens = json_list<int32_t>(j, "prompt_tokens");
    r.logits_sha256 = j.at("logits_sha256").get<std::string>();
    if (json_out) *json_out = p.out;
    if (json_out && !j.contains("text")) fail(ErrorKind::Invalid, "engine output lacks text");
    return r;
  } catch (const json::exception& e) {
    fail(ErrorKind::Invalid, run.who + ": the engine printed unexpected JSON: " + e.what());
  }
}

void record_run(PreparedRun& run, const std::string& file) {
  bool user_json = std::find(run.args.begin(), run.args.end(), "--json") != run.args.end();
  std::string prompt = inline_prompt(run.args);
  std::string out;
  RunRecord r = run_captured(run, &out);
  r.prompt = prompt;
  auto seed = option_value(r.args, "--seed", "");
  r.seed = seed ? std::stoull(*seed) : 0;
  if (user_json)
    std::cout << out;
  else
    std::cout << json::parse(out).at("text").get<std::string>() << "\n";
  std::cout.flush();
  signing::write_file_atomic(file, r.to_json(), 0644);
  std::cerr << "galleon: run recorded in " << file << "\n";
}

// Takes "--record FILE" / "--record=FILE" out of the arguments.
std::string take_record(std::vector<std::string>& user) {
  std::string file;
  for (size_t i = 0; i < user.size(); ++i) {
    if (user[i] == "--record") {
      if (i + 1 >= user.size()) fail(ErrorKind::Usage, "--record needs a file name");
      file = user[i + 1];
      user.erase(user.begin() + long(i), user.begin() + long(i) + 2);
      return file;
    }
    if (user[i].rfind("--record=", 0) == 0) {
      file = user[i].substr(9);
      user.erase(user.begin() + long(i));
      return file;
    }
  }
  return file;
}

}  // namespace

std::vector<std::string> default_args(const std::string& manifest_bytes,
                                      const std::vector<std::string>& user) {
  auto m = bundles::parse_manifest(manifest_bytes, "manifest");
  const auto& d = m.defaults;
  struct Opt {
    const char* flag;
    char short_flag;
    std::string value;
  };
  const Opt opts[] = {{"--temperature", 0, d.temperature},
                      {"--top-p", 0, d.top_p},
                      {"--top-k", 0, std::to_string(d.top_k)},
                      {"--seed", 0, std::to_string(d.seed)},
                      {"--max-tokens", 'n', std::to_string(d.max_tokens)}};
  std::vector<std::string> out;
  for (const auto& o : opts)
    if (!has_option(user, o.flag, o.short_flag)) out.insert(out.end(), {o.flag, o.value});
  return out;
}

bool run_bundle_if_named(const std::vector<std::string>& args) {
  if (args.empty() || args[0].empty() || args[0][0] == '-') return false;
  const std::string& target = args[0];
  std::vector<std::string> user(args.begin() + 1, args.end());
  std::string record = take_record(user);
  bool inheritable = !record.empty();
  std::optional<PreparedRun> run;
  struct stat st {};
  if (::stat(target.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode) || !looks_like_bundle(target)) {
      if (!record.empty()) fail(ErrorKind::Usage, "--record needs a bundle (installed or a file)");
      return false;
    }
    run = prepare_file(target, user, inheritable);
  } else if (target.find('/') != std::string::npos) {
    return false;  // a missing path, not a name: the engine reports it
  } else {
    pkg::Home home = pkg::home_from_env();
    if (!std::filesystem::exists(home.db()))
      fail(ErrorKind::NotFound, target + ": no such file, and no bundle is installed (" +
                                    home.root + ")");
    pkg::Store store(home, pkg::StoreMode::Read);
    pkg::BundleRow row =
        with_context(target + ": no such file", [&] { return store.resolve(target); });
    run = prepare_installed(store, row, user, inheritable);
  }
  if (record.empty()) run->engine->exec(run->who, run->engine_args());
  record_run(*run, record);
  return true;
}

RunRecord RunRecord::parse(const std::string& bytes, const std::string& origin) {
  std::string_view text = bytes;
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  json j = bundles::parse_canonical(text, origin);
  auto bad = [&](const std::string& what) -> Error {
    return Error(ErrorKind::Invalid, origin + ": " + what);
  };
  if (!j.is_object() || j.value("format", "") != kRunRecordFormat)
    throw bad(std::string("expected a run record (format ") + kRunRecordFormat + ")");
  RunRecord r;
  try {
    r.bundle_id = j.at("bundle").get<std::string>();
    r.engine_sha256 = j.at("engine_sha256").get<std::string>();
    r.args = j.at("args").get<std::vector<std::string>>();
    r.seed = j.at("seed").get<uint64_t>();
    r.prompt = j.at("prompt").get<std::string>();
    r.prompt_tokens = j.at("prompt_tokens").get<std::vector<int32_t>>();
    r.tokens = j.at("tokens").get<std::vector<int32_t>>();
    r.logits_sha256 = j.at("logits_sha256").get<std::string>();
  } catch (const json::exception& e) {
    throw bad(std::string("malformed run record: ") + e.what());
  }
  return r;
}

std::string RunRecord::to_json() const {
  json j = {{"format", kRunRecordFormat}, {"bundle", bundle_id},     {"engine_sha256", engine_sha256},
            {"args", args},               {"seed", seed},            {"prompt", prompt},
            {"prompt_tokens", prompt_tokens}, {"tokens", tokens},    {"logits_sha256", logits_sha256}};
  return bundles::canonical_dump(j) + "\n";
}

ReplayOutcome replay_record(const RunRecord& record) {
  pkg::Store store(pkg::home_from_env(), pkg::StoreMode::Read);
  auto row = store.find(record.bundle_id);
  if (!row)
    fail(ErrorKind::NotFound, record.bundle_id +
                                  ": the recorded bundle is not installed (galleon install it "
                                  "first)");
  PreparedRun run = prepare_installed(store, *row, record.args, true);
  ReplayOutcome out;
  if (run.engine_sha256 != record.engine_sha256)
    fail(ErrorKind::Mismatch, "the installed engine " + run.engine_sha256 +
                                  " is not the recorded one " + record.engine_sha256);
  RunRecord now = run_captured(run, nullptr);
  size_t n = std::min(now.tokens.size(), record.tokens.size());
  for (size_t i = 0; i < n; ++i)
    if (now.tokens[i] != record.tokens[i]) {
      out.detail = "first difference at output token " + std::to_string(i) + ": recorded " +
                   std::to_string(record.tokens[i]) + ", got " + std::to_string(now.tokens[i]);
      return out;
    }
  if (now.tokens.size() != record.tokens.size()) {
    out.detail = "first difference at output token " + std::to_string(n) + ": recorded " +
                 std::to_string(record.tokens.size()) + " tokens, got " +
                 std::to_string(now.tokens.size());
    return out;
  }
  if (now.prompt_tokens != record.prompt_tokens) {
    out.detail = "the prompt tokenizes differently";
    return out;
  }
  if (now.logits_sha256 != record.logits_sha256) {
    out.detail = "same tokens, but logits_sha256 " + now.logits_sha256 + " differs from the "
                 "recorded " + record.logits_sha256;
    return out;
  }
  out.identical = true;
  out.detail = std::to_string(now.tokens.size()) + " tokens and logits_sha256 " +
               now.logits_sha256 + " identical";
  return out;
}

}  // namespace galleon::cli
