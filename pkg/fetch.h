// pkg: fetching a bundle over BitTorrent or HTTP mirrors, and the file to seed for an installed
// bundle (docs/distribution.md). Downloaded bytes are untrusted until the bundle reader verified
// them; installing is the caller's step (install_bundle, same trust policy as `install`).
#pragma once

#include <csignal>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "pkg/home.h"
#include "pkg/store.h"
#include "pkg/torrent.h"

namespace galleon::pkg {

inline constexpr uint64_t kDefaultFetchCap = uint64_t(64) << 30;  // 64 GiB

struct FetchOptions {
  PeerOptions peer;                 // the BitTorrent session (listen address, --lan, --dht)
  std::vector<std::string> peers;   // "HOST:PORT" peers to connect to
  int idle_timeout_s = 300;         // give up after this long without a new verified byte
  uint64_t max_size = kDefaultFetchCap;  // HTTP: refuse more bytes than this
  bool progress = false;            // a progress line on stderr (callers pass isatty(2))
  // Called about every 200 ms while a torrent downloads (e.g. JSON lines for --json).
  std::function<void(const TorrentProgress&)> on_progress;
  // Set by a signal handler: stop, keeping the partial data for a later resume.
  const volatile std::sig_atomic_t* stop = nullptr;
};

struct FetchResult {
  std::string file;         // the verified bundle file
  std::string id;
  std::string name;
  std::string version;
  uint64_t size = 0;
  uint64_t downloaded = 0;  // bytes received by this run (less than size after a resume)
  std::string source;       // the magnet, torrent or URL that delivered it
  int hash_failures = 0;    // torrent pieces that peers sent wrong and that were fetched again
};

// Where fetch keeps partial downloads by default: <home>/partial/ (tmp/ is swept on every write
// to the store, which would throw a resumable download away).
std::string partial_dir(const Home& home);

// Downloads one bundle into `dir` and verifies it with the bundle reader. `sources` is one magnet
// link, one .torrent file (or URL ending in .torrent), or one or more http(s)/file URLs of the
// same bundle (mirrors, tried in turn: a failing mirror or one whose bytes do not verify is
// reported through `warn` and the next one is tried). Errors: Usage (bad source), Network (no
// peer or mirror delivered, timeout, interrupted), Invalid (the bytes are not a valid bundle), Io.
FetchResult fetch_bundle(const std::vector<std::string>& sources, const std::string& dir,
                         const FetchOptions& options,
                         const std::function<void(const std::string&)>& warn);

// Writes the byte-identical bundle file of an installed bundle into `dir` (NAME-VERSION.galleon)
// and returns its path. Error(Internal) if the written id differs.
std::string export_installed(Store& store, const BundleRow& bundle, const std::string& dir);

}  // namespace galleon::pkg
