// Distribution verbs (docs/distribution.md): torrent, seed, fetch.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "bundles/reader.h"
#include "pkg/cli/command.h"
#include "pkg/cli/engine_exec.h"
#include "pkg/fetch.h"
#include "pkg/install.h"
#include "pkg/store.h"
#include "pkg/torrent.h"
#include "runtime/error.h"
#include "signing/files.h"

namespace galleon::cli {
namespace {

namespace fsys = std::filesystem;
using nlohmann::json;

volatile std::sig_atomic_t g_stop = 0;

void on_stop_signal(int) { g_stop = 1; }

// SIGINT and SIGTERM set g_stop instead of killing the process.
void catch_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

void warn(const std::string& msg) { std::cerr << "galleon: " << msg << "\n"; }

// A folder removed (with its contents) when the verb ends.
class ScratchDir {
 public:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {}
  ~ScratchDir() {
    std::error_code ec;
    if (created_) fsys::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& get() {
    if (!created_) {
      std::error_code ec;
      fsys::create_directories(path_, ec);
      if (ec) fail(ErrorKind::Io, path_ + ": cannot create: " + ec.message());
      created_ = true;
    }
    return path_;
  }

 private:
  std::string path_;
  bool created_ = false;
};

// Removes export-<pid> folders left by a seed or torrent process that was killed.
void sweep_dead_exports(const std::string& partial) {
  std::error_code ec;
  for (const auto& e : fsys::directory_iterator(partial, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("export-", 0) != 0) continue;
    const long pid = std::strtol(name.c_str() + 7, nullptr, 10);
    if (pid > 0 && kill(pid_t(pid), 0) != 0 && errno == ESRCH) fsys::remove_all(e.path(), ec);
  }
}

ScratchDir scratch_for_exports() {
  const std::string partial = pkg::partial_dir(pkg::home_from_env());
  sweep_dead_exports(partial);
  return ScratchDir(partial + "/export-" + std::to_string(getpid()));
}

// A bundle file as given, or an installed bundle (NAME[@VERSION] or id) exported into `scratch`.
// A file is checked to be a bundle (its head: manifest and signature entries) before it is
// hashed; its members are not re-hashed here (libtorrent re-checks the pieces before seeding).
std::string bundle_file_for(const std::string& ref, ScratchDir& scratch) {
  if (fsys::is_regular_file(ref)) {
    bundles::BundleReader head(ref);
    return ref;
  }
  pkg::Store store(pkg::home_from_env(), pkg::StoreMode::Read);
  pkg::BundleRow b = store.resolve(ref);
  return pkg::export_installed(store, b, scratch.get());
}

void add_peer_flags(CLI::App* cmd, pkg::PeerOptions& p) {
  cmd->add_flag("--lan", p.lan, "Local peer discovery (LSD); off by default");
  cmd->add_flag("--dht", p.dht, "Use the DHT; off by default");
}

// ---- torrent ----

struct TorrentArgs {
  std::string ref;
  std::string out;
  std::vector<std::string> web_seeds;
  bool v1 = false;
};

void run_torrent(const TorrentArgs& a) {
  ScratchDir scratch = scratch_for_exports();
  pkg::TorrentMeta meta =
      pkg::make_torrent(bundle_file_for(a.ref, scratch), a.web_seeds,
                        a.v1 ? pkg::TorrentFormat::V1 : pkg::TorrentFormat::Hybrid);
  if (!a.out.empty()) signing::write_file_atomic(a.out, meta.bytes, 0644);
  std::cout << meta.magnet << "\n";
}

void setup_torrent(CLI::App& root, Context&) {
  auto a = std::make_shared<TorrentArgs>();
  CLI::App* cmd = root.add_subcommand(
      "torrent",
      "Print the magnet link of a bundle's deterministic torrent (and write the .torrent)");
  cmd->add_option("BUNDLE|NAME", a->ref, "Bundle file, or an installed NAME[@VERSION] or id")
      ->required();
  cmd->add_option("--out", a->out, "Write the .torrent file here");
  cmd->add_option("--web-seed", a->web_seeds,
                  "HTTP mirror of the bundle file (BEP 19), repeatable");
  cmd->add_flag("--v1", a->v1,
                "A v1-only torrent (BEP 3) instead of the hybrid, for clients without BitTorrent "
                "v2 (Transmission 3, aria2 1.36); its own infohash");
  cmd->callback([a] { run_torrent(*a); });
}

// ---- seed ----

struct SeedArgs {
  std::vector<std::string> refs;
  std::vector<std::string> web_seeds;
  pkg::PeerOptions peer;
  bool v1 = false;
};

void show_seed_status(pkg::TorrentSession& session, size_t count) {
  int peers = 0, rate = 0;
  uint64_t up = 0;
  for (size_t i = 0; i < count; ++i) {
    auto p = session.progress(int(i));
    peers += p.peers;
    rate += p.upload_rate;
    up += p.uploaded;
  }
  std::fprintf(stderr, "\r  %d peers, %d KiB/s up, %llu MiB uploaded   ", peers, rate / 1024,
               static_cast<unsigned long long>(up >> 20));
}

// Waits until every torrent passed its check; Error(Invalid) when a file does not match.
void wait_until_seeding(pkg::TorrentSession& session, size_t count) {
  for (size_t i = 0; i < count && !g_stop;) {
    auto p = session.progress(int(i));
    if (!p.error.empty()) fail(ErrorKind::Io, p.name + ": " + p.error);
    if (p.finished) {
      ++i;
      continue;
    }
    if (p.has_metadata && !p.checking)
      fail(ErrorKind::Invalid, p.name + ": the file changed after it was hashed (" +
                                   std::to_string(p.done) + " of " + std::to_string(p.total) +
                                   " bytes match)");
    session.wait(100);
  }
}

void run_seed(const SeedArgs& a) {
  catch_stop_signals();
  ScratchDir scratch = scratch_for_exports();
  std::vector<pkg::TorrentMeta> metas;
  std::vector<std::string> dirs;
  for (const auto& ref : a.refs) {
    const std::string file = bundle_file_for(ref, scratch);
    const std::string dir = fsys::absolute(file).parent_path().string();
    metas.push_back(pkg::make_torrent(file, a.web_seeds));
    dirs.push_back(dir);
    if (a.v1) {  // the v1-only torrent of the same file, seeded beside the hybrid
      metas.push_back(pkg::make_torrent(file, a.web_seeds, pkg::TorrentFormat::V1));
      dirs.push_back(dir);
    }
  }
  pkg::TorrentSession session(a.peer);
  const std::string addr = session.listen_address();
  for (size_t i = 0; i < metas.size(); ++i) session.add_seed(metas[i], dirs[i]);
  wait_until_seeding(session, metas.size());
  if (g_stop) return;
  std::cout << "listening on " << addr << "\n";
  for (const auto& m : metas) std::cout << m.magnet << "\n";
  std::cout << std::flush;
  const bool tty = isatty(2);
  while (!g_stop) {
    session.wait(500);
    if (tty) show_seed_status(session, metas.size());
  }
  uint64_t up = 0;
  for (size_t i = 0; i < metas.size(); ++i) up += session.progress(int(i)).uploaded;
  if (tty) std::fputs("\n", stderr);
  std::cout << "stopped: uploaded " << up << " bytes\n" << std::flush;
}

void setup_seed(CLI::App& root, Context&) {
  auto a = std::make_shared<SeedArgs>();
  a->peer.listen = "0.0.0.0:6881";
  CLI::App* cmd = root.add_subcommand("seed", "Seed bundles over BitTorrent until interrupted");
  cmd->add_option("BUNDLE|NAME", a->refs, "Bundle files, or installed NAME[@VERSION] or ids")
      ->required();
  cmd->add_option("--listen", a->peer.listen, "ADDR:PORT to listen on")->capture_default_str();
  add_peer_flags(cmd, a->peer);
  cmd->add_option("--web-seed", a->web_seeds,
                  "HTTP mirror of the bundle file (BEP 19), repeatable");
  cmd->add_option("--max-upload-rate", a->peer.max_upload_rate, "Bytes per second, 0: unlimited");
  cmd->add_flag("--v1", a->v1,
                "Also seed each bundle's v1-only torrent (galleon torrent --v1), for clients "
                "without BitTorrent v2; its magnet follows the hybrid's");
  cmd->callback([a] { run_seed(*a); });
}

// ---- fetch ----

struct FetchArgs {
  std::vector<std::string> sources;
  std::string out;
  bool install = false;
  bool json = false;
  pkg::InstallOptions install_options;
  pkg::FetchOptions fetch;
};

json progress_json(const pkg::TorrentProgress& p) {
  return {{"event", "progress"},        {"done", p.done},   {"total", p.total},
          {"downloaded", p.downloaded}, {"peers", p.peers}, {"hash_failures", p.hash_failures}};
}

json result_json(const pkg::FetchResult& r, bool installed) {
  return {{"event", "done"},
          {"file", r.file},
          {"id", r.id},
          {"name", r.name},
          {"version", r.version},
          {"size", r.size},
          {"downloaded", r.downloaded},
          {"hash_failures", r.hash_failures},
          {"installed", installed},
          {"source", r.source}};
}

void install_fetched(const FetchArgs& a, const pkg::FetchResult& r) {
  pkg::InstallOptions o = a.install_options;
  o.host_engine = sibling_engine_path();
  pkg::Store store(pkg::home_from_env(), pkg::StoreMode::Write);
  auto outcome = pkg::install_bundle(store, r.file, o, warn);
  std::ostream& out = a.json ? std::cerr : std::cout;
  out << (outcome.already_installed ? "already installed: " : "installed ") << outcome.name << " "
      << outcome.version << " " << outcome.id << "\n";
}

void run_fetch(FetchArgs a) {
  catch_stop_signals();
  const pkg::Home home = pkg::home_from_env();
  const std::string dir = a.out.empty() ? pkg::partial_dir(home) : a.out;
  a.fetch.progress = !a.json && isatty(2);
  a.fetch.stop = &g_stop;
  if (a.json)
    a.fetch.on_progress = [](const pkg::TorrentProgress& p) {
      std::cout << progress_json(p).dump() << "\n" << std::flush;
    };
  pkg::FetchResult r = pkg::fetch_bundle(a.sources, dir, a.fetch, warn);
  if (a.install) {
    install_fetched(a, r);
    if (a.out.empty()) fsys::remove(r.file);  // the store holds it now; export re-creates it
  }
  if (a.json)
    std::cout << result_json(r, a.install).dump() << "\n";
  else if (a.install && a.out.empty())
    std::cout << "fetched " << r.name << " " << r.version << " " << r.id << "\n";
  else
    std::cout << "fetched " << r.name << " " << r.version << " " << r.id << " " << r.file << "\n";
}

void setup_fetch(CLI::App& root, Context&) {
  auto a = std::make_shared<FetchArgs>();
  a->fetch.peer.listen = "0.0.0.0:0";
  CLI::App* cmd = root.add_subcommand(
      "fetch", "Download a bundle (magnet, .torrent or http/https/file mirrors), verify, install");
  cmd->add_option("MAGNET|TORRENT|URL", a->sources,
                  "One magnet link or .torrent file, or URLs of the same bundle (tried in turn)")
      ->required();
  cmd->add_option("--peer", a->fetch.peers, "HOST:PORT of a peer to connect to, repeatable");
  add_peer_flags(cmd, a->fetch.peer);
  cmd->add_option("--listen", a->fetch.peer.listen, "ADDR:PORT to listen on")
      ->capture_default_str();
  cmd->add_option("--out", a->out, "Download into this folder and keep the file there");
  cmd->add_flag("--install", a->install, "Install the bundle once it verified");
  cmd->add_flag("--allow-untrusted", a->install_options.allow_untrusted,
                "Install without a trusted signature (said loudly)");
  cmd->add_flag("--allow-downgrade", a->install_options.allow_downgrade,
                "Install a version older than one accepted before");
  cmd->add_flag("--no-check", a->install_options.no_check,
                "Do not replay the conformance transcript on install");
  cmd->add_option("--timeout", a->fetch.idle_timeout_s,
                  "Give up after S seconds without progress (0: never)")
      ->capture_default_str();
  cmd->add_option("--max-size", a->fetch.max_size, "HTTP: refuse more bytes than this")
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "Progress and the result as JSON lines on stdout");
  cmd->callback([a] { run_fetch(*a); });
}

}  // namespace

const Registration reg_torrent{"torrent", setup_torrent};
const Registration reg_seed{"seed", setup_seed};
const Registration reg_fetch{"fetch", setup_fetch};

}  // namespace galleon::cli
