#include "pkg/torrent.h"

#include <libtorrent/add_torrent_params.hpp>
#include <libtorrent/alert_types.hpp>
#include <libtorrent/bencode.hpp>
#include <libtorrent/create_torrent.hpp>
#include <libtorrent/ip_filter.hpp>
#include <libtorrent/magnet_uri.hpp>
#include <libtorrent/session.hpp>
#include <libtorrent/session_params.hpp>
#include <libtorrent/settings_pack.hpp>
#include <libtorrent/torrent_handle.hpp>
#include <libtorrent/torrent_info.hpp>
#include <libtorrent/torrent_status.hpp>

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <chrono>
#include <filesystem>
#include <iterator>
#include <map>

#include "runtime/error.h"

namespace galleon::pkg {
namespace {

namespace fsys = std::filesystem;

constexpr int kMinPiece = 16 * 1024;
constexpr int kMaxPiece = 16 * 1024 * 1024;
constexpr uint64_t kMaxPieces = 1024;

template <class Hash>
std::string hex(const Hash& h) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : h) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

// The identifying fields of a parsed torrent.
TorrentMeta describe(const lt::torrent_info& ti, std::string bytes) {
  TorrentMeta m;
  m.bytes = std::move(bytes);
  m.name = ti.files().file_name(lt::file_index_t{0}).to_string();
  m.size = uint64_t(ti.total_size());
  m.piece_size = ti.piece_length();
  m.btih = hex(ti.info_hashes().v1);
  m.btmh = ti.info_hashes().has_v2() ? "1220" + hex(ti.info_hashes().v2) : "";
  m.magnet = lt::make_magnet_uri(ti);
  return m;
}

lt::torrent_info load_info(const std::string& bytes, const std::string& origin) {
  lt::error_code ec;
  lt::torrent_info ti(lt::span<const char>(bytes.data(), std::ptrdiff_t(bytes.size())), ec,
                      lt::from_span);
  if (ec) fail(ErrorKind::Invalid, origin + ": not a torrent: " + ec.message());
  if (ti.num_files() != 1)
    fail(ErrorKind::Invalid, origin + ": a bundle torrent holds one file, this one holds " +
                                 std::to_string(ti.num_files()));
  return ti;
}

struct AddrInfoFree {
  void operator()(addrinfo* a) const noexcept { freeaddrinfo(a); }
};

// The first address of a host name (getaddrinfo); Error(Network) when it does not resolve.
lt::address resolve_host(const std::string& host, const std::string& text) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (rc != 0 || !found)
    fail(ErrorKind::Network, text + ": cannot resolve " + host + ": " + gai_strerror(rc));
  std::unique_ptr<addrinfo, AddrInfoFree> owner(found);
  char buf[INET6_ADDRSTRLEN] = {0};
  const void* raw =
      found->ai_family == AF_INET6
          ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(found->ai_addr)->sin6_addr)
          : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr);
  inet_ntop(found->ai_family, raw, buf, sizeof buf);
  return lt::make_address(buf);
}

lt::tcp::endpoint parse_endpoint(const std::string& text) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0)
    fail(ErrorKind::Usage, text + ": expected HOST:PORT");
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  lt::error_code ec;
  lt::address addr = lt::make_address(host, ec);
  if (ec) addr = resolve_host(host, text);
  char* end = nullptr;
  const unsigned long port = std::strtoul(text.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || port == 0 || port > 65535) fail(ErrorKind::Usage, text + ": bad port");
  return {addr, static_cast<unsigned short>(port)};
}

lt::settings_pack make_settings(const PeerOptions& o) {
  lt::settings_pack sp;
  sp.set_str(lt::settings_pack::listen_interfaces, o.listen);
  sp.set_bool(lt::settings_pack::enable_dht, o.dht);
  sp.set_bool(lt::settings_pack::enable_lsd, o.lan);
  sp.set_bool(lt::settings_pack::enable_upnp, false);
  sp.set_bool(lt::settings_pack::enable_natpmp, false);
  sp.set_bool(lt::settings_pack::enable_outgoing_utp, false);
  sp.set_bool(lt::settings_pack::enable_incoming_utp, false);
  sp.set_bool(lt::settings_pack::allow_multiple_connections_per_ip, true);
  sp.set_int(lt::settings_pack::upload_rate_limit, o.max_upload_rate);
  sp.set_int(lt::settings_pack::download_rate_limit, o.max_download_rate);
  sp.set_int(
      lt::settings_pack::alert_mask,
      int(lt::alert_category::error | lt::alert_category::status | lt::alert_category::storage));
  return sp;
}

}  // namespace

int torrent_piece_size(uint64_t file_size) {
  int piece = kMinPiece;
  while (piece < kMaxPiece && (file_size + uint64_t(piece) - 1) / uint64_t(piece) > kMaxPieces)
    piece *= 2;
  return piece;
}

TorrentMeta make_torrent(const std::string& file, const std::vector<std::string>& web_seeds,
                         TorrentFormat format) {
  std::error_code fec;
  const uint64_t size = fsys::file_size(file, fec);
  if (fec) fail(ErrorKind::NotFound, file + ": " + fec.message());
  if (size == 0) fail(ErrorKind::Invalid, file + ": empty file");
  const fsys::path path = fsys::absolute(file);
  lt::file_storage fs;
  fs.add_file(path.filename().string(), std::int64_t(size));
  lt::create_torrent ct(fs, torrent_piece_size(size),
                        format == TorrentFormat::V1 ? lt::create_torrent::v1_only
                                                    : lt::create_flags_t{});
  ct.set_creation_date(0);
  for (const auto& url : web_seeds) ct.add_url_seed(url);
  lt::error_code ec;
  lt::set_piece_hashes(ct, path.parent_path().string(), ec);
  if (ec) fail(ErrorKind::Io, file + ": cannot hash: " + ec.message());
  std::string bytes;
  lt::bencode(std::back_inserter(bytes), ct.generate());
  return describe(load_info(bytes, file), bytes);
}

TorrentMeta parse_torrent(const std::string& bytes, const std::string& origin) {
  return describe(load_info(bytes, origin), bytes);
}

bool is_magnet(const std::string& s) { return s.rfind("magnet:?", 0) == 0; }

struct TorrentSession::Impl {
  std::unique_ptr<lt::session> session;
  std::vector<lt::torrent_handle> handles;
  std::map<int, int> hash_failures;
  std::map<int, std::string> errors;
  std::string listen_addr;
  std::string listen_error;

  int index_of(const lt::torrent_handle& h) const {
    for (size_t i = 0; i < handles.size(); ++i)
      if (handles[i] == h) return int(i);
    return -1;
  }

  void handle_alert(lt::alert* a) {
    if (auto* ok = lt::alert_cast<lt::listen_succeeded_alert>(a)) {
      if (ok->socket_type == lt::socket_type_t::tcp)
        listen_addr = ok->address.to_string() + ":" + std::to_string(ok->port);
    } else if (auto* bad = lt::alert_cast<lt::listen_failed_alert>(a)) {
      listen_error = bad->message();
    } else if (auto* hf = lt::alert_cast<lt::hash_failed_alert>(a)) {
      ++hash_failures[index_of(hf->handle)];
    } else if (auto* te = lt::alert_cast<lt::torrent_error_alert>(a)) {
      errors[index_of(te->handle)] = te->message();
    } else if (auto* fe = lt::alert_cast<lt::file_error_alert>(a)) {
      errors[index_of(fe->handle)] = fe->message();
    }
  }

  void drain() {
    std::vector<lt::alert*> alerts;
    session->pop_alerts(&alerts);
    for (lt::alert* a : alerts) handle_alert(a);
  }

  int add(lt::add_torrent_params atp) {
    atp.flags &= ~lt::torrent_flags::auto_managed;
    atp.flags &= ~lt::torrent_flags::paused;
    lt::error_code ec;
    lt::torrent_handle h = session->add_torrent(std::move(atp), ec);
    if (ec) fail(ErrorKind::Invalid, "cannot add the torrent: " + ec.message());
    handles.push_back(h);
    return int(handles.size()) - 1;
  }
};

TorrentSession::TorrentSession(const PeerOptions& options) : impl_(std::make_unique<Impl>()) {
  parse_endpoint(options.listen.substr(0, options.listen.rfind(':')) + ":1");  // validates ADDR
  lt::session_params params(make_settings(options));
  impl_->session = std::make_unique<lt::session>(std::move(params));
  if (options.max_upload_rate > 0 || options.max_download_rate > 0) {
    // Rate limits apply to the global peer class; by default local peers are in another class.
    lt::ip_filter classes;
    const std::uint32_t global = 1u
                                 << static_cast<std::uint32_t>(lt::session::global_peer_class_id);
    classes.add_rule(lt::make_address("0.0.0.0"), lt::make_address("255.255.255.255"), global);
    classes.add_rule(lt::make_address("::"),
                     lt::make_address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), global);
    impl_->session->set_peer_class_filter(classes);
  }
}

TorrentSession::~TorrentSession() = default;

std::string TorrentSession::listen_address(int timeout_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (impl_->listen_addr.empty() && impl_->listen_error.empty() &&
         std::chrono::steady_clock::now() < until) {
    impl_->session->wait_for_alert(std::chrono::milliseconds(100));
    impl_->drain();
  }
  if (!impl_->listen_addr.empty()) return impl_->listen_addr;
  if (!impl_->listen_error.empty()) fail(ErrorKind::Network, impl_->listen_error);
  fail(ErrorKind::Network,
       "the BitTorrent session is not listening after " + std::to_string(timeout_ms / 1000) + " s");
}

int TorrentSession::add_seed(const TorrentMeta& meta, const std::string& dir) {
  lt::add_torrent_params atp;
  atp.ti = std::make_shared<lt::torrent_info>(load_info(meta.bytes, meta.name));
  atp.save_path = dir;
  return impl_->add(std::move(atp));
}

int TorrentSession::add_download(const std::string& magnet, const TorrentMeta* meta,
                                 const std::string& dir, const std::vector<std::string>& peers) {
  lt::add_torrent_params atp;
  if (meta) {
    atp.ti = std::make_shared<lt::torrent_info>(load_info(meta->bytes, meta->name));
  } else {
    lt::error_code ec;
    lt::parse_magnet_uri(magnet, atp, ec);
    if (ec) fail(ErrorKind::Usage, magnet + ": not a magnet link: " + ec.message());
  }
  atp.save_path = dir;
  std::vector<lt::tcp::endpoint> endpoints;
  for (const auto& p : peers) endpoints.push_back(parse_endpoint(p));
  const int index = impl_->add(std::move(atp));
  for (const auto& ep : endpoints) impl_->handles[size_t(index)].connect_peer(ep);
  return index;
}

TorrentProgress TorrentSession::progress(int index) {
  impl_->drain();
  const lt::torrent_status st = impl_->handles.at(size_t(index)).status();
  TorrentProgress p;
  p.has_metadata = st.has_metadata;
  p.finished = st.has_metadata && st.is_seeding;
  p.checking = st.state == lt::torrent_status::checking_files ||
               st.state == lt::torrent_status::checking_resume_data;
  p.done = uint64_t(st.total_wanted_done);
  p.total = st.has_metadata ? uint64_t(st.total_wanted) : 0;
  p.downloaded = uint64_t(st.total_payload_download);
  p.uploaded = uint64_t(st.total_payload_upload);
  p.peers = st.num_peers;
  p.upload_rate = st.upload_payload_rate;
  p.download_rate = st.download_payload_rate;
  p.hash_failures = impl_->hash_failures[index];
  p.name = st.name;
  p.error = impl_->errors[index];
  if (p.error.empty() && st.errc) p.error = st.errc.message();
  return p;
}

void TorrentSession::wait(int ms) {
  impl_->session->wait_for_alert(std::chrono::milliseconds(ms));
  impl_->drain();
}

}  // namespace galleon::pkg
