// BitTorrent through libtorrent-rasterbar 2.0 (docs/distribution.md): deterministic hybrid
// v1+v2 torrents of one bundle file, magnet links, and an RAII session that seeds or downloads.
// libtorrent stays behind this header (pimpl): callers never include its headers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace galleon::pkg {

// A .torrent file and what identifies it.
struct TorrentMeta {
  std::string bytes;   // the bencoded .torrent
  std::string name;    // the file name inside the torrent
  uint64_t size = 0;   // bytes of that file
  int piece_size = 0;
  std::string btih;    // v1 infohash, 40 hex digits
  std::string btmh;    // v2 infohash, "1220" + 64 hex digits (multihash sha2-256); empty for v1
  std::string magnet;  // magnet:?xt=urn:btih:..&xt=urn:btmh:..&dn=..[&ws=..]
};

// Piece size rule: the smallest power of two from 16 KiB up such that the file has at most
// 1024 pieces, capped at 16 MiB. Depends on the size only.
int torrent_piece_size(uint64_t file_size);

// Hybrid: BEP 3 and BEP 52 in one torrent, the default (v1 and v2 clients join one swarm).
// V1: BEP 3 only, for clients that cannot read a BEP 52 file tree (Debian 12's Transmission
// 3.00 refuses the torrent, its aria2 1.36 computes another infohash); it has its own infohash,
// so it is a swarm of its own.
enum class TorrentFormat { Hybrid, V1 };

// Hashes `file` and returns its torrent: hybrid v1+v2 (or v1 only), no creation date, no
// creator, no comment, no trackers, the file's base name, `web_seeds` as url-list (BEP 19). The
// same bytes, name, web seeds and format always give the same .torrent bytes.
// Error(NotFound/Io) for the file.
TorrentMeta make_torrent(const std::string& file, const std::vector<std::string>& web_seeds = {},
                         TorrentFormat format = TorrentFormat::Hybrid);

// Parses .torrent bytes (Error(Invalid) naming `origin` when they are not a torrent). Refuses a
// torrent of several files: a bundle is one file.
TorrentMeta parse_torrent(const std::string& bytes, const std::string& origin);

bool is_magnet(const std::string& s);

struct PeerOptions {
  std::string listen = "0.0.0.0:0";  // ADDR:PORT of the one listen socket (port 0: any)
  bool lan = false;                   // local service discovery
  bool dht = false;                   // the DHT (with its default bootstrap nodes)
  int max_upload_rate = 0;            // bytes/s, 0 = unlimited (applies to local peers too)
  int max_download_rate = 0;          // bytes/s, 0 = unlimited
};

struct TorrentProgress {
  bool has_metadata = false;
  bool finished = false;       // every piece is here and passed its hash
  bool checking = false;       // files on disk are being checked against the piece hashes
  uint64_t done = 0;           // verified bytes
  uint64_t total = 0;          // 0 until the metadata is known
  uint64_t downloaded = 0;     // payload bytes received by this session
  uint64_t uploaded = 0;       // payload bytes sent by this session
  int peers = 0;
  int upload_rate = 0;         // bytes/s
  int download_rate = 0;       // bytes/s
  int hash_failures = 0;       // pieces that failed their hash check (a peer sent bad bytes)
  std::string name;            // the file name, once known
  std::string error;           // a torrent or file error, when one happened
};

// One libtorrent session: UPnP and NAT-PMP always off; LSD and DHT off unless asked; TCP only;
// listens on PeerOptions::listen. The destructor shuts the session down (blocking).
class TorrentSession {
 public:
  explicit TorrentSession(const PeerOptions& options);
  ~TorrentSession();
  TorrentSession(const TorrentSession&) = delete;
  TorrentSession& operator=(const TorrentSession&) = delete;

  // "ADDR:PORT" of the listen socket, waiting for it up to `timeout_ms`. Error(Network) when
  // listening failed.
  std::string listen_address(int timeout_ms = 10000);

  // Seeds `meta` from `dir`/meta.name: the file is re-checked against the piece hashes first.
  // Returns an index for progress().
  int add_seed(const TorrentMeta& meta, const std::string& dir);
  // Downloads into `dir` from a magnet link or a torrent, connecting to `peers` ("HOST:PORT").
  // Data already in `dir` (an interrupted download) is re-checked and kept.
  int add_download(const std::string& magnet, const TorrentMeta* meta, const std::string& dir,
                   const std::vector<std::string>& peers);

  // Handles pending events and returns the torrent's state.
  TorrentProgress progress(int index);
  // Waits up to `ms` for events.
  void wait(int ms);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace galleon::pkg
