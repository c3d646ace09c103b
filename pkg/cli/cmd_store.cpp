// Store verbs (docs/store.md): install, list, info, remove, gc, fsck, check, export.
#include <unistd.h>

#include <cstdio>

#include <filesystem>
#include <iostream>
#include <map>
#include <memory>

#include <nlohmann/json.hpp>

#include "bundles/canonical_json.h"
#include "bundles/reader.h"
#include "bundles/writer.h"
#include "pkg/cli/command.h"
#include "pkg/cli/engine_exec.h"
#include "pkg/crash_point.h"
#include "pkg/fetch.h"
#include "pkg/install.h"
#include "pkg/store.h"
#include "runtime/error.h"
#include "signing/files.h"
#include "signing/sha256.h"
#include "signing/signature.h"
#include "signing/trust.h"

namespace galleon::cli {
namespace {

namespace fsys = std::filesystem;
using nlohmann::json;

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

void warn(const std::string& msg) { std::cerr << "galleon: " << msg << "\n"; }

uint64_t bundle_size(pkg::Store& store, const std::string& id) {
  uint64_t n = 0;
  for (const auto& m : store.members(id)) n += m.size;
  return n;
}

// ---- install ----

struct InstallArgs {
  std::string path;
  pkg::InstallOptions options;
};

void print_outcome(const pkg::InstallOutcome& o) {
  if (o.already_installed)
    std::cout << "already installed: " << o.name << " " << o.version << " " << o.id << "\n";
  else
    std::cout << "installed " << o.name << " " << o.version << " " << o.id << " (" << o.new_blobs
              << " new blobs, " << human_bytes(o.new_bytes) << ")\n";
  if (o.check_result == pkg::kCheckIdentical)
    std::cout << "conformance: identical (" << o.check_detail << ")\n";
  else if (o.check_result == pkg::kCheckHostEngine)
    std::cout << "conformance: identical with this host's engine (" << o.check_detail << ")\n";
  else if (o.check_result == pkg::kCheckMismatch)
    warn("CONFORMANCE MISMATCH: " + o.name + " " + o.version +
         " is installed, but this machine does not reproduce its transcript: " + o.check_detail +
         "\n(outputs on this machine differ from the bundle's; `galleon remove " + o.name +
         "@" + o.version + "` to remove it)");
  else if (o.check_result != pkg::kCheckNotRun)
    std::cout << "conformance: " << o.check_result << " (" << o.check_detail << ")\n";
}

// A one-line bar on stderr, redrawn in place (only when stderr is a terminal).
void draw_progress(uint64_t done, uint64_t total) {
  int pct = total ? int(done * 100 / total) : 100;
  int filled = pct * 30 / 100;
  std::fprintf(stderr, "\r  verifying [%.*s%*s] %3d%% %s", filled,
               "##############################", 30 - filled, "", pct, human_bytes(done).c_str());
  if (done == total) std::fputs("\n", stderr);
  std::fflush(stderr);
}

void run_install(InstallArgs a, Context& ctx) {
  auto files = pkg::bundle_files(a.path);
  if (isatty(2)) a.options.progress = draw_progress;
  a.options.host_engine = sibling_engine_path();
  pkg::Store store(pkg::home_from_env(), pkg::StoreMode::Write);
  std::optional<Error> first;
  bool mismatch = false;
  for (const auto& f : files) {
    try {
      auto o = pkg::install_bundle(store, f, a.options, warn);
      print_outcome(o);
      mismatch |= o.check_result == pkg::kCheckMismatch;
    } catch (const Error& e) {
      if (files.size() == 1) throw;
      warn(e.message());
      if (!first) first = e;
    }
  }
  if (first) fail(first->kind(), "some bundles were not installed (see above)");
  if (mismatch) ctx.exit_code = exit_code(ErrorKind::Mismatch);
}

void setup_install(CLI::App& root, Context& ctx) {
  auto a = std::make_shared<InstallArgs>();
  CLI::App* cmd = root.add_subcommand("install", "Install a bundle file, or every *.galleon in a folder");
  cmd->add_option("PATH", a->path, "Bundle file or folder")->required();
  cmd->add_flag("--allow-untrusted", a->options.allow_untrusted,
                "Install even without a valid signature by a trusted key (said loudly)");
  cmd->add_flag("--allow-downgrade", a->options.allow_downgrade,
                "Install an older version than one accepted before from the same key");
  cmd->add_flag("--no-check", a->options.no_check, "Do not replay the conformance transcript");
  cmd->add_option("--threshold", a->options.threshold,
                  "Valid signatures by distinct trusted keys required (default 1)")
      ->check(CLI::Range(1, 1000));
  cmd->callback([a, &ctx] { run_install(*a, ctx); });
}

// ---- list / info ----

json bundle_json(pkg::Store& store, const pkg::BundleRow& b) {
  return {{"id", b.id},
          {"name", b.name},
          {"version", b.version},
          {"trusted", b.trusted},
          {"check", b.check_result},
          {"size", bundle_size(store, b.id)}};
}

void setup_list(CLI::App& root, Context&) {
  auto as_json = std::make_shared<bool>(false);
  CLI::App* cmd = root.add_subcommand("list", "List installed bundles");
  cmd->add_flag("--json", *as_json, "Print a JSON array");
  cmd->callback([as_json] {
    pkg::Store store(pkg::home_from_env(), pkg::StoreMode::Read);
    auto rows = store.bundles();
    if (*as_json) {
      json out = json::array();
      for (const auto& b : rows) out.push_back(bundle_json(store, b));
      std::cout << out.dump() << "\n";
      return;
    }
    for (const auto& b : rows)
      std::cout << b.name << "\t" << b.version << "\t" << b.id.substr(0, 19) << "\t"
                << human_bytes(bundle_size(store, b.id)) << "\t"
                << (b.trusted ? "trusted" : "UNTRUSTED") << "\t" << b.check_result << "\n";
  });
}

json info_json(pkg::Store& store, const pkg::BundleRow& b) {
  auto m = bundles::parse_manifest(b.manifest_bytes, b.id);
  json out = bundle_json(store, b);
  out["description"] = m.description;
  out["license"] = m.license;
  out["check_detail"] = b.check_detail;
  out["engine"] = {{"abi", m.engine.abi}, {"platform", m.engine.platform}};
  out["model"] = {{"architecture", m.model.architecture},
                  {"n_params", m.model.n_params},
                  {"tensor_types", m.model.tensor_types}};
  out["defaults"] = m.defaults.to_json();
  out["recipe_sha256"] = m.recipe_sha256;
  json members = json::array();
  for (const auto& mem : store.members(b.id))
    members.push_back({{"path", mem.path}, {"role", mem.role}, {"size", mem.size},
                       {"sha256", mem.sha256}, {"blob", store.blob_path(mem.sha256)}});
  out["members"] = members;
  json signers = json::array();
  for (const auto& s : store.signatures(b.id)) signers.push_back(s.key_id);
  out["signatures"] = signers;
  return out;
}

void print_info(const json& j) {
  std::cout << j["name"].get<std::string>() << " " << j["version"].get<std::string>() << "\n"
            << "id:          " << j["id"].get<std::string>() << "\n"
            << "description: " << j["description"].get<std::string>() << "\n"
            << "license:     " << j["license"].get<std::string>() << "\n"
            << "trusted:     " << (j["trusted"].get<bool>() ? "yes" : "NO") << "\n"
            << "conformance: " << j["check"].get<std::string>();
  if (!j["check_detail"].get<std::string>().empty())
    std::cout << " (" << j["check_detail"].get<std::string>() << ")";
  std::cout << "\nengine:      " << j["engine"]["platform"].get<std::string>() << " "
            << j["engine"]["abi"].get<std::string>() << "\n"
            << "model:       " << j["model"]["architecture"].get<std::string>() << ", "
            << j["model"]["n_params"].get<uint64_t>() << " parameters\n"
            << "defaults:    " << j["defaults"].dump() << "\n"
            << "signed by:  ";
  for (const auto& k : j["signatures"]) std::cout << " " << k.get<std::string>();
  std::cout << "\nmembers:\n";
  for (const auto& m : j["members"])
    std::cout << "  " << m["role"].get<std::string>() << "\t" << m["path"].get<std::string>()
              << "\t" << human_bytes(m["size"].get<uint64_t>()) << "\t"
              << m["sha256"].get<std::string>() << "\n";
}

void setup_info(CLI::App& root, Context&) {
  struct Args {
    std::string ref;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = root.add_subcommand("info", "Show an installed bundle");
  cmd->add_option("NAME|ID", a->ref, "NAME[@VERSION], sha256:ID or a unique id prefix")->required();
  cmd->add_flag("--json", a->json, "Print one JSON object");
  cmd->callback([a] {
    pkg::Store store(pkg::home_from_env(), pkg::StoreMode::Read);
    json j = info_json(store, store.resolve(a->ref));
    if (a->json)
      std::cout << j.dump() << "\n";
    else
      print_info(j);
  });
}

// ---- remove / gc ----

void setup_remove(CLI::App& root, Context&) {
  auto refs = std::make_shared<std::vector<std::string>>();
  CLI::App* cmd = root.add_subcommand("remove", "Forget installed bundles (blobs go with gc)");
  cmd->add_option("NAME|ID", *refs, "NAME[@VERSION], sha256:ID or a unique id prefix")->required();
  cmd->callback([refs] {
    pkg::Store store(pkg::home_from_env(), pkg::StoreMode::Write);
    for (const auto& ref : *refs) {
      auto b = store.resolve(ref);
      store.remove(b.id);
      std::cout << "removed " << b.name << " " << b.version << " " << b.id << "\n";
    }
    std::cout << "run `galleon gc` to delete blobs no longer used\n";
  });
}

void run_gc() {
  pkg::Store store(pkg::home_from_env(), pkg::StoreMode::Write);
  auto used = store.referenced_blobs();
  size_t count = 0;
  uint64_t bytes = 0;
  std::set<std::string> dirs;
  for (const auto& sha : store.blob_files()) {
    if (used.count(sha)) continue;
    std::string path = store.blob_path(sha);
    std::error_code ec;
    uint64_t size = fsys::file_size(path, ec);
    if (ec) size = 0;
    store.fs().unlink(path);
    pkg::crash_point("gc.blob-deleted");
    dirs.insert(store.blob_dir(sha));
    std::cout << "deleted " << path << " (" << human_bytes(size) << ")\n";
    ++count;
    bytes += size;
  }
  for (const auto& d : dirs) {
    std::error_code ec;
    fsys::remove(d, ec);  // only when empty
  }
  if (!dirs.empty()) store.fs().fsync_dir(store.home().blobs());
  std::cout << "freed " << count << " blobs, " << human_bytes(bytes) << "\n";
}

void setup_gc(CLI::App& root, Context&) {
  CLI::App* cmd = root.add_subcommand("gc", "Delete blobs that no installed bundle uses");
  cmd->callback(run_gc);
}

// ---- fsck ----

// One bundle's rows against its manifest and its blobs.
void fsck_bundle(pkg::Store& store, const pkg::BundleRow& b, std::vector<std::string>& problems) {
  std::string who = b.name + " " + b.version + " (" + b.id + ")";
  if (bundles::bundle_id_of(b.manifest_bytes) != b.id) {
    problems.push_back(who + ": the stored manifest does not hash to the bundle id");
    return;
  }
  auto manifest = bundles::parse_manifest(b.manifest_bytes, b.id);
  auto rows = store.members(b.id);
  bool same = rows.size() == manifest.members.size();
  for (size_t i = 0; same && i < rows.size(); ++i) {
    const auto& m = manifest.members[i];
    same = rows[i].path == m.path && rows[i].sha256 == m.sha256 && rows[i].size == m.size &&
           rows[i].role == bundles::role_name(m.role);
  }
  if (!same) problems.push_back(who + ": the member rows differ from the stored manifest");
  for (const auto& m : rows) {
    std::string path = store.blob_path(m.sha256);
    std::error_code ec;
    uint64_t size = fsys::file_size(path, ec);
    if (ec)
      problems.push_back(who + ": member " + m.path + ": blob missing: " + path);
    else if (size != m.size)
      problems.push_back(who + ": member " + m.path + ": blob " + path + " holds " +
                         std::to_string(size) + " bytes, expected " + std::to_string(m.size));
  }
}

// Re-hashes every blob; damaged ones are deleted when `repair`.
void fsck_blobs(pkg::Store& store, bool repair, std::vector<std::string>& problems) {
  size_t count = 0;
  uint64_t bytes = 0;
  for (const auto& sha : store.blob_files()) {
    std::string path = store.blob_path(sha);
    signing::FileDigest d = signing::sha256_file(path);
    ++count;
    bytes += d.size;
    if (d.sha256 == sha) continue;
    problems.push_back(path + ": damaged: its content hashes to " + d.sha256);
    if (!repair) continue;
    store.fs().unlink(path);
    std::cout << "deleted damaged blob " << path << "\n";
  }
  std::cout << "checked " << count << " blobs (" << human_bytes(bytes) << ")\n";
}

void run_fsck(bool repair) {
  pkg::Store store(pkg::home_from_env(), pkg::StoreMode::Write);
  std::vector<std::string> problems;
  fsck_blobs(store, repair, problems);
  auto bundles_rows = store.bundles();
  for (const auto& b : bundles_rows) fsck_bundle(store, b, problems);
  auto used = store.referenced_blobs();
  size_t unused = 0;
  for (const auto& sha : store.blob_files()) unused += used.count(sha) ? 0 : 1;
  std::cout << "checked " << bundles_rows.size() << " bundles";
  if (unused) std::cout << "; " << unused << " unused blobs (galleon gc deletes them)";
  std::cout << "\n";
  if (problems.empty()) {
    std::cout << "no damage found\n";
    return;
  }
  for (const auto& p : problems) std::cout << "DAMAGE: " << p << "\n";
  fail(ErrorKind::Invalid, std::to_string(problems.size()) + " problem(s) found in " +
                               store.home().root +
                               (repair ? "" : " (fsck --repair deletes damaged blobs; then "
                                              "install the bundle file again)"));
}

void setup_fsck(CLI::App& root, Context&) {
  auto repair = std::make_shared<bool>(false);
  CLI::App* cmd = root.add_subcommand("fsck", "Re-hash every blob and check every bundle's blobs");
  cmd->add_flag("--repair", *repair,
                "Delete damaged blobs, so that installing the bundle file again restores them");
  cmd->callback([repair] { run_fsck(*repair); });
}

// ---- check ----

void setup_check(CLI::App& root, Context&) {
  auto ref = std::make_shared<std::string>();
  auto device = std::make_shared<std::string>("cpu");
  CLI::App* cmd = root.add_subcommand("check", "Replay an installed bundle's conformance transcript");
  cmd->add_option("NAME|ID", *ref, "NAME[@VERSION], sha256:ID or a unique id prefix")->required();
  cmd->add_option("--device", *device,
                  "cpu (the bundle's engine), or cuda[:N] (its CUDA engine on GPU N; the "
                  "recorded check is left as it is)")
      ->check([](const std::string& d) {
        return d == "cpu" || is_cuda_device(d) ? std::string() : "expected cpu, cuda or cuda:N";
      });
  cmd->callback([ref, device] {
    pkg::Store store(pkg::home_from_env(), pkg::StoreMode::Read);
    auto b = store.resolve(*ref);
    auto c = is_cuda_device(*device) ? pkg::check_installed_on_gpu(store, b, *device)
                                     : pkg::check_installed(store, b, sibling_engine_path());
    std::string who = b.name + " " + b.version + " (" + b.id + ")";
    if (c.result == pkg::kCheckIdentical || c.result == pkg::kCheckHostEngine) {
      std::cout << who << ": identical: " << c.detail << "\n";
      return;
    }
    if (c.result == pkg::kCheckMismatch)
      fail(ErrorKind::Mismatch, who + ": MISMATCH: this machine does not reproduce the "
                                      "conformance transcript: " + c.detail);
    if (c.result == pkg::kCheckOtherPlatform || is_cuda_device(*device))
      fail(ErrorKind::Unsupported, who + ": " + c.detail);
    fail(ErrorKind::NotFound, who + ": " + c.detail);
  });
}

// ---- export ----

struct ExportArgs {
  std::vector<std::string> refs;
  std::string dir;
};

// The bundle re-created byte-identical (pkg::export_installed), plus its signers' public keys
// from the trust store.
std::string export_one(pkg::Store& store, const pkg::BundleRow& b, const std::string& dir) {
  const std::string out = pkg::export_installed(store, b, dir);
  signing::TrustStore trust(store.home().trust());
  for (const auto& s : store.signatures(b.id)) {
    auto key = trust.lookup(s.key_id);
    std::string pub = dir + "/" + s.key_id + ".pub";
    if (key && !fsys::exists(pub)) signing::write_file_atomic(pub, key->to_line(), 0644);
  }
  return out;
}

// index.json: every bundle and public key in the folder.
void write_index(const std::string& dir) {
  json bundles_list = json::array(), keys = json::array();
  std::vector<fsys::path> entries;
  for (const auto& e : fsys::directory_iterator(dir)) entries.push_back(e.path());
  std::sort(entries.begin(), entries.end());
  for (const auto& p : entries) {
    if (p.extension() == ".pub") keys.push_back(p.filename().string());
    if (p.extension() != ".galleon") continue;
    bundles::BundleReader r(p.string());
    bundles_list.push_back({{"file", p.filename().string()},
                            {"id", r.id()},
                            {"name", r.manifest().name},
                            {"size", uint64_t(fsys::file_size(p))},
                            {"version", r.manifest().version}});
  }
  json index = {{"format", "galleon-index/1"}, {"bundles", bundles_list}, {"keys", keys}};
  signing::write_file_atomic(dir + "/index.json", bundles::canonical_dump(index) + "\n", 0644);
}

void setup_export(CLI::App& root, Context&) {
  auto a = std::make_shared<ExportArgs>();
  CLI::App* cmd = root.add_subcommand(
      "export", "Write installed bundles (byte-identical), signer keys and index.json to a folder");
  cmd->add_option("NAME|ID", a->refs, "NAME[@VERSION], sha256:ID or a unique id prefix")->required();
  cmd->add_option("--to", a->dir, "Destination folder (created when missing)")->required();
  cmd->callback([a] {
    pkg::Store store(pkg::home_from_env(), pkg::StoreMode::Read);
    std::error_code ec;
    fsys::create_directories(a->dir, ec);
    if (ec) fail(ErrorKind::Io, a->dir + ": cannot create the folder: " + ec.message());
    for (const auto& ref : a->refs) {
      auto b = store.resolve(ref);
      std::string out = with_context("exporting " + b.name + " " + b.version,
                                     [&] { return export_one(store, b, a->dir); });
      std::cout << "exported " << b.name << " " << b.version << " " << b.id << " to " << out << "\n";
    }
    write_index(a->dir);
  });
}

const Registration reg_install{"install", setup_install};
const Registration reg_list{"list", setup_list};
const Registration reg_info{"info", setup_info};
const Registration reg_remove{"remove", setup_remove};
const Registration reg_gc{"gc", setup_gc};
const Registration reg_fsck{"fsck", setup_fsck};
const Registration reg_check{"check", setup_check};
const Registration reg_export{"export", setup_export};

}  // namespace
}  // namespace galleon::cli
