#include "pkg/fetch.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>

#include "bundles/reader.h"
#include "bundles/writer.h"
#include "pkg/crash_point.h"
#include "pkg/http.h"
#include "runtime/error.h"
#include "signing/files.h"
#include "signing/signature.h"

namespace galleon::pkg {
namespace {

namespace fsys = std::filesystem;
using Clock = std::chrono::steady_clock;
using Warn = std::function<void(const std::string&)>;

constexpr uint64_t kMaxTorrentFile = 64 << 20;  // a .torrent of a 64 GiB file is far smaller

uint64_t size_or_zero(const std::string& path) {
  std::error_code ec;
  const uint64_t n = fsys::file_size(path, ec);
  return ec ? 0 : n;
}

// Reads and verifies a downloaded bundle file.
FetchResult verify_download(const std::string& file, const std::string& source) {
  bundles::BundleReader reader(file);
  reader.verify();
  FetchResult r;
  r.file = file;
  r.id = reader.id();
  r.name = reader.manifest().name;
  r.version = reader.manifest().version;
  r.size = size_or_zero(file);
  r.source = source;
  return r;
}

void print_progress(const TorrentProgress& p) {
  std::fprintf(stderr, "\r  %s: %llu / %llu KiB, %d peers, %d KiB/s   ", p.name.c_str(),
               static_cast<unsigned long long>(p.done / 1024),
               static_cast<unsigned long long>(p.total / 1024), p.peers, p.download_rate / 1024);
}

std::string timeout_message(const TorrentProgress& p, int seconds) {
  std::string m = "no progress for " + std::to_string(seconds) + " s";
  if (!p.has_metadata) return m + " (no peer sent the torrent's metadata)";
  m += " (" + std::to_string(p.done) + " of " + std::to_string(p.total) + " bytes verified, " +
       std::to_string(p.peers) + " peers)";
  if (p.hash_failures > 0)
    m += "; " + std::to_string(p.hash_failures) +
         " pieces failed their hash check: a peer sends corrupt data";
  return m;
}

// Runs the torrent until it is complete; returns its last progress.
TorrentProgress run_torrent(TorrentSession& session, int index, const FetchOptions& o) {
  uint64_t best = 0;
  auto last_gain = Clock::now();
  bool first = true;
  for (;;) {
    TorrentProgress p = session.progress(index);
    if (o.on_progress) o.on_progress(p);
    if (o.progress) print_progress(p);
    if (p.done > 0 && !p.finished) crash_point("fetch.downloading");
    if (p.finished) {
      if (o.progress) std::fputs("\n", stderr);
      return p;
    }
    if (!p.error.empty()) fail(ErrorKind::Io, p.name + ": " + p.error);
    if (first || p.done > best) last_gain = Clock::now();
    first = false;
    best = std::max(best, p.done);
    if (o.stop && *o.stop)
      fail(ErrorKind::Network, "interrupted; the partial download is kept and resumes next time");
    if (o.idle_timeout_s > 0 && Clock::now() - last_gain > std::chrono::seconds(o.idle_timeout_s))
      fail(ErrorKind::Network, timeout_message(p, o.idle_timeout_s));
    session.wait(200);
  }
}

// A magnet link that names no tracker, web seed or peer, fetched without --peer, --lan or
// --dht, would wait for the timeout: refuse it at once.
void require_peer_source(const std::string& magnet, const FetchOptions& o) {
  if (!o.peers.empty() || o.peer.lan || o.peer.dht) return;
  for (const char* key : {"&tr=", "&ws=", "&x.pe=", "?tr=", "?ws=", "?x.pe="})
    if (magnet.find(key) != std::string::npos) return;
  fail(ErrorKind::Usage,
       "fetch: this magnet link names no tracker, web seed or peer: give "
       "--peer HOST:PORT, --lan or --dht");
}

FetchResult fetch_torrent(const std::string& source, const std::string& dir,
                          const FetchOptions& o) {
  TorrentMeta meta;
  const bool magnet = is_magnet(source);
  if (magnet) require_peer_source(source, o);
  if (!magnet) meta = parse_torrent(signing::read_file_capped(source, kMaxTorrentFile), source);
  TorrentProgress last;
  {
    TorrentSession session(o.peer);
    session.listen_address();
    const int index = session.add_download(source, magnet ? nullptr : &meta, dir, o.peers);
    last = run_torrent(session, index, o);
  }  // the session is shut down: the file is complete and closed
  crash_point("fetch.downloaded");
  FetchResult r = verify_download((fsys::path(dir) / last.name).string(), source);
  crash_point("fetch.verified");
  r.downloaded = last.downloaded;
  r.hash_failures = last.hash_failures;
  return r;
}

// The file name for a URL: its last path segment, or "download.galleon".
std::string url_file_name(const std::string& url) {
  std::string path = url.substr(0, url.find_first_of("?#"));
  const size_t slash = path.rfind('/');
  std::string name = slash == std::string::npos ? "" : path.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") name = "download.galleon";
  return name;
}

FetchResult fetch_mirrors(const std::vector<std::string>& urls, const std::string& dir,
                          const FetchOptions& o, const Warn& warn) {
  for (const auto& url : urls)
    if (!is_supported_url(url))
      fail(ErrorKind::Usage, url + ": only http://, https:// and file:// URLs are supported");
  const std::string dest = (fsys::path(dir) / url_file_name(urls.front())).string();
  DownloadOptions d;
  d.max_size = o.max_size;
  d.progress = o.progress;
  if (o.idle_timeout_s > 0) d.low_speed_time_s = o.idle_timeout_s;
  std::optional<Error> last;
  for (const auto& url : urls) {
    const uint64_t before = size_or_zero(dest);
    try {
      download(url, dest, d);
      crash_point("fetch.downloaded");
      FetchResult r = verify_download(dest, url);
      crash_point("fetch.verified");
      r.downloaded = r.size > before ? r.size - before : r.size;
      return r;
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::Io || e.kind() == ErrorKind::Usage) throw;
      if (e.kind() != ErrorKind::Network) fsys::remove(dest);  // wrong bytes: never resume them
      warn(url + ": refused: " + e.message());
      last = e;
    }
  }
  throw *last;
}

bool is_torrent_url(const std::string& s) {
  const std::string name = url_file_name(s);
  return is_supported_url(s) && name.size() > 8 &&
         name.compare(name.size() - 8, 8, ".torrent") == 0;
}

// Downloads a .torrent file named by URL into `dir` (replacing an earlier copy).
std::string download_torrent_file(const std::string& url, const std::string& dir,
                                  const FetchOptions& o) {
  const std::string dest = (fsys::path(dir) / url_file_name(url)).string();
  fsys::remove(dest);
  DownloadOptions d;
  d.max_size = kMaxTorrentFile;
  if (o.idle_timeout_s > 0) d.low_speed_time_s = o.idle_timeout_s;
  download(url, dest, d);
  return dest;
}

}  // namespace

std::string partial_dir(const Home& home) { return home.root + "/partial"; }

FetchResult fetch_bundle(const std::vector<std::string>& sources, const std::string& dir,
                         const FetchOptions& options, const Warn& warn) {
  if (sources.empty()) fail(ErrorKind::Usage, "fetch: nothing to fetch");
  std::error_code ec;
  fsys::create_directories(dir, ec);
  if (ec) fail(ErrorKind::Io, dir + ": cannot create: " + ec.message());
  const std::string& first = sources.front();
  const bool torrent = is_magnet(first) || (!is_supported_url(first) && fsys::exists(first));
  if (torrent || is_torrent_url(first)) {
    if (sources.size() != 1)
      fail(ErrorKind::Usage, "fetch: one magnet link or .torrent file at a time");
    if (torrent) return fetch_torrent(first, dir, options);
    return fetch_torrent(download_torrent_file(first, dir, options), dir, options);
  }
  if (!is_supported_url(first) && first.find("://") == std::string::npos)
    fail(ErrorKind::NotFound, first + ": no such file (and not a magnet link or URL)");
  return fetch_mirrors(sources, dir, options, warn);
}

std::string export_installed(Store& store, const BundleRow& b, const std::string& dir) {
  auto manifest = bundles::parse_manifest(b.manifest_bytes, b.id);
  std::vector<signing::Signature> sigs;
  for (const auto& s : store.signatures(b.id))
    sigs.push_back(signing::parse_signature(s.bytes, b.id + " signature " + s.key_id));
  std::map<std::string, bundles::MemberSource> sources;
  for (const auto& m : manifest.members) sources[m.path] = {store.blob_path(m.sha256), 0};
  const std::string out = dir + "/" + b.name + "-" + b.version + ".galleon";
  auto r = bundles::write_bundle(out, manifest, sigs, sources);
  if (r.bundle_id != b.id)
    fail(ErrorKind::Internal, out + ": exported id " + r.bundle_id + " differs from " + b.id);
  return out;
}

}  // namespace galleon::pkg
