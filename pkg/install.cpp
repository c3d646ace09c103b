#include "pkg/install.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>

#include "bundles/reader.h"
#include "pkg/conformance.h"
#include "pkg/crash_point.h"
#include "runtime/error.h"
#include "signing/sha256.h"
#include "signing/trust.h"

namespace galleon::pkg {
namespace {

namespace fsys = std::filesystem;

constexpr mode_t kBlobMode = 0444;
constexpr mode_t kEngineBlobMode = 0555;

mode_t blob_mode(bundles::Role role) {
  return bundles::is_engine(role) ? kEngineBlobMode : kBlobMode;
}

struct KeyBeside {
  std::string path;
  signing::PublicKey key;
};

// Public keys (*.pub) in the bundle's folder: listed to the user, never trusted.
std::vector<KeyBeside> keys_beside(const std::string& file) {
  std::vector<KeyBeside> out;
  fsys::path dir = fsys::path(file).parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  for (const auto& e : fsys::directory_iterator(dir, ec)) {
    if (e.path().extension() != ".pub" || !e.is_regular_file()) continue;
    try {
      out.push_back({e.path().string(), signing::load_public_key(e.path().string())});
    } catch (const Error&) {
      // Not a galleon public key: nothing to list.
    }
  }
  std::sort(out.begin(), out.end(),
            [](const KeyBeside& a, const KeyBeside& b) { return a.path < b.path; });
  return out;
}

std::string untrusted_message(const signing::PolicyResult& policy,
                              const std::vector<KeyBeside>& beside) {
  std::string msg = "untrusted, not installed: " + policy.explain();
  if (!beside.empty()) {
    msg += "\npublic keys found beside the bundle (never trusted automatically; check them, then "
           "`galleon trust add FILE`):";
    for (const auto& k : beside) {
      bool signer = std::any_of(policy.checks.begin(), policy.checks.end(),
                                [&](const auto& c) { return c.key_id == k.key.key_id() && c.valid; });
      msg += "\n  " + k.path + " (key " + k.key.key_id() + (signer ? ", signed this bundle)" : ")");
    }
  }
  msg += "\nto install it anyway, pass --allow-untrusted";
  return msg;
}

// Receives one member into tmp/ (the reader hashes it); closed and fsynced once verified.
class BlobSink final : public bundles::MemberSink {
 public:
  BlobSink(FileSystem& fs, std::string tmp_path, mode_t mode)
      : fs_(fs), tmp_path_(std::move(tmp_path)), mode_(mode) {}

  void begin(const bundles::Member&, uint64_t) override {
    file_ = std::make_unique<FsFile>(fs_, tmp_path_, mode_);
  }
  void write(const void* data, size_t size) override { file_->write(data, size); }
  void verified(const bundles::Member&) override {
    file_->sync_and_close();
    crash_point("install.member-staged");
  }
  const std::string& tmp_path() const { return tmp_path_; }

 private:
  FileSystem& fs_;
  std::string tmp_path_;
  mode_t mode_;
  std::unique_ptr<FsFile> file_;
};

// Counts the bytes of one member for the progress callback, forwarding them to `inner`
// (nullptr: the member is only hashed).
class CountingSink final : public bundles::MemberSink {
 public:
  CountingSink(bundles::MemberSink* inner, const Progress& progress, uint64_t& done, uint64_t total)
      : inner_(inner), progress_(progress), done_(done), total_(total) {}
  void begin(const bundles::Member& m, uint64_t offset) override {
    if (inner_) inner_->begin(m, offset);
  }
  void write(const void* data, size_t size) override {
    if (inner_) inner_->write(data, size);
    done_ += size;
    if (done_ - reported_ >= (8u << 20) || done_ == total_) {
      reported_ = done_;
      progress_(done_, total_);
    }
  }
  void verified(const bundles::Member& m) override {
    if (inner_) inner_->verified(m);
  }

 private:
  bundles::MemberSink* inner_;
  const Progress& progress_;
  uint64_t& done_;
  uint64_t total_;
  uint64_t reported_ = 0;
};

// The new blobs of one install: streamed into tmp/, moved into blobs/ only after the whole
// bundle verified, and removed again unless commit() is reached.
class Staging {
 public:
  explicit Staging(Store& store) : store_(store) {}
  ~Staging() { rollback(); }
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;

  bundles::MemberSink* choose(const bundles::Member& m) {
    if (store_.has_blob(m.sha256)) {
      if (bundles::is_engine(m.role)) existing_engines_.push_back(m.sha256);
      return nullptr;
    }
    if (sinks_.count(m.sha256)) return nullptr;  // same bytes twice in one bundle
    auto sink = std::make_unique<BlobSink>(store_.fs(), store_.home().tmp() + "/" + m.sha256 + ".part",
                                           blob_mode(m.role));
    BlobSink* raw = sink.get();
    sinks_.emplace(m.sha256, std::move(sink));
    sizes_[m.sha256] = m.size;
    return raw;
  }

  // Renames the verified tmp files into blobs/ and makes the renames durable.
  void place() {
    std::set<std::string> dirs;
    bool new_dir = false;
    for (const auto& [sha, sink] : sinks_) {
      std::string dir = store_.blob_dir(sha);
      if (!fsys::exists(dir)) {
        store_.fs().mkdir(dir, 0755);
        created_dirs_.push_back(dir);
        new_dir = true;
      }
      store_.fs().rename(sink->tmp_path(), store_.blob_path(sha));
      placed_.push_back(store_.blob_path(sha));
      crash_point("install.blob-renamed");
      dirs.insert(dir);
    }
    for (const auto& sha : existing_engines_) ::chmod(store_.blob_path(sha).c_str(), kEngineBlobMode);
    for (const auto& d : dirs) store_.fs().fsync_dir(d);
    if (new_dir) store_.fs().fsync_dir(store_.home().blobs());
    if (!sinks_.empty()) store_.fs().fsync_dir(store_.home().tmp());
  }

  void commit() { committed_ = true; }
  size_t count() const { return sinks_.size(); }
  uint64_t bytes() const {
    uint64_t n = 0;
    for (const auto& [sha, size] : sizes_) n += size;
    return n;
  }

 private:
  void rollback() noexcept {
    if (committed_) return;
    for (const auto& [sha, sink] : sinks_) try_unlink(sink->tmp_path());
    for (const auto& path : placed_) try_unlink(path);
    for (const auto& dir : created_dirs_) {
      std::error_code ec;
      fsys::remove(dir, ec);  // only when empty
    }
  }
  void try_unlink(const std::string& path) noexcept {
    try {
      store_.fs().unlink(path);
    } catch (const Error&) {
      // tmp/ is swept on the next start; a stray blob is collected by gc.
    }
  }

  Store& store_;
  std::map<std::string, std::unique_ptr<BlobSink>> sinks_;
  std::map<std::string, uint64_t> sizes_;
  std::vector<std::string> existing_engines_;
  std::vector<std::string> placed_;
  std::vector<std::string> created_dirs_;
  bool committed_ = false;
};

bool all_blobs_present(Store& store, const std::string& id) {
  auto members = store.members(id);
  return std::all_of(members.begin(), members.end(),
                     [&](const MemberRow& m) { return store.has_blob(m.sha256); });
}

void check_downgrade(Store& store, const bundles::Manifest& m,
                     const std::vector<std::string>& signers, const InstallOptions& options,
                     const Warn& warn) {
  for (const auto& key : signers) {
    auto floor = store.accepted_version(m.name, key);
    if (!floor || compare_versions(m.version, *floor) >= 0) continue;
    std::string what = m.name + " " + m.version + " is older than version " + *floor +
                       " already accepted from key " + key;
    if (!options.allow_downgrade)
      fail(ErrorKind::Untrusted,
           "downgrade refused: " + what + " (a rollback attack looks like this; pass "
           "--allow-downgrade if you mean it)");
    warn("WARNING: installing a downgrade (--allow-downgrade): " + what);
  }
}

void verify_blob(Store& store, const bundles::Member& m) {
  std::string path = store.blob_path(m.sha256);
  signing::FileDigest d = signing::sha256_file(path);
  if (d.sha256 != m.sha256 || d.size != m.size)
    fail(ErrorKind::Invalid, path + ": blob of member " + m.path + " is damaged (sha256 " +
                                 d.sha256 + ", expected " + m.sha256 + "); run galleon fsck");
}

InstallOutcome install_one(Store& store, const std::string& file, const InstallOptions& options,
                           const Warn& warn) {
  bundles::BundleReader reader(file);
  const bundles::Manifest& m = reader.manifest();
  InstallOutcome out;
  out.file = file;
  out.id = reader.id();
  out.name = m.name;
  out.version = m.version;
  signing::TrustStore trust(store.home().trust());
  auto beside = keys_beside(file);
  std::vector<signing::PublicKey> extra;
  for (const auto& k : beside) extra.push_back(k.key);
  auto policy = signing::check_policy(trust, reader.id(), reader.signatures(), options.threshold, extra);
  out.trusted = policy.threshold_met;
  out.signers = policy.trusted_signers;
  if (!out.trusted) {
    if (!options.allow_untrusted) fail(ErrorKind::Untrusted, untrusted_message(policy, beside));
    warn("WARNING: installing an UNTRUSTED bundle (--allow-untrusted): " + m.name + " " +
         m.version + " " + reader.id() + ": " + policy.explain());
  }
  if (auto row = store.find(out.id); row && all_blobs_present(store, out.id)) {
    if (out.trusted && !row->trusted)  // installed untrusted before, its signer is trusted now
      store.record({reader.manifest_bytes(), m, true, reader.signatures(), policy.trusted_signers});
    out.already_installed = true;
    out.check_result = row->check_result;
    out.check_detail = row->check_detail;
    return out;
  }
  check_downgrade(store, m, policy.trusted_signers, options, warn);

  Staging staging(store);
  uint64_t total = 0, done = 0;
  for (const auto& member : m.members) total += member.size;
  std::vector<std::unique_ptr<CountingSink>> counters;
  reader.verify([&](const bundles::Member& member) -> bundles::MemberSink* {
    bundles::MemberSink* sink = staging.choose(member);
    if (!options.progress) return sink;
    counters.push_back(std::make_unique<CountingSink>(sink, options.progress, done, total));
    return counters.back().get();
  });
  staging.place();
  crash_point("install.before-commit");
  store.record({reader.manifest_bytes(), m, out.trusted, reader.signatures(), policy.trusted_signers});
  crash_point("install.after-commit");
  staging.commit();
  out.new_blobs = staging.count();
  out.new_bytes = staging.bytes();
  return out;
}

}  // namespace

std::vector<std::string> bundle_files(const std::string& path) {
  std::error_code ec;
  auto status = fsys::status(path, ec);
  if (ec || !fsys::exists(status)) fail(ErrorKind::NotFound, path + ": no such file or folder");
  if (!fsys::is_directory(status)) return {path};
  std::vector<std::string> out;
  for (const auto& e : fsys::directory_iterator(path, ec))
    if (e.path().extension() == ".galleon" && e.is_regular_file()) out.push_back(e.path().string());
  if (ec) fail(ErrorKind::Io, path + ": cannot list the folder: " + ec.message());
  std::sort(out.begin(), out.end());
  if (out.empty()) fail(ErrorKind::NotFound, path + ": the folder holds no *.galleon bundle");
  return out;
}

InstallOutcome install_bundle(Store& store, const std::string& file, const InstallOptions& options,
                              const Warn& warn) {
  InstallOutcome out = with_context(file, [&] { return install_one(store, file, options, warn); });
  if (out.already_installed || options.no_check) {
    if (!out.already_installed) out.check_result = kCheckNotRun;
    return out;
  }
  auto row = store.find(out.id);
  crash_point("install.before-check");
  try {
    CheckOutcome c = check_installed(store, *row, options.host_engine);
    out.check_result = c.result;
    out.check_detail = c.detail;
  } catch (const Error& e) {
    // The bundle is installed; the machine could not replay its transcript.
    out.check_result = kCheckMismatch;
    out.check_detail = e.message();
    store.set_check(out.id, out.check_result, out.check_detail);
  }
  return out;
}

namespace {

// Re-hashes the engine, weights and conformance blobs, then replays the transcript with
// `runner` (the engine blob, or a host engine) and `extra_args`.
ReplayResult replay_blobs(Store& store, const bundles::Manifest& m, const bundles::Member& engine,
                          const bundles::Member& weights, const bundles::Member& conformance,
                          const std::string& runner, const std::vector<std::string>& extra_args) {
  for (const auto* member : {&engine, &weights, &conformance}) verify_blob(store, *member);
  std::string bytes =
      signing::read_file_capped(store.blob_path(conformance.sha256), conformance.size);
  Transcript expected = Transcript::parse(bytes, m.name + " " + conformance.path);
  return replay(runner, {store.blob_path(weights.sha256), 0, 0}, expected, extra_args);
}

}  // namespace

CheckOutcome check_installed(Store& store, const BundleRow& bundle, const std::string& host_engine) {
  bundles::Manifest m = bundles::parse_manifest(bundle.manifest_bytes, bundle.id);
  const bundles::Member* engine = m.find_role(bundles::Role::Engine);
  const bundles::Member* weights = m.find_role(bundles::Role::Weights);
  const bundles::Member* conformance = m.find_role(bundles::Role::Conformance);
  bool other_platform = m.engine.platform != bundles::host_platform();
  std::string platforms = "the engine is built for " + m.engine.platform + ", this host is " +
                          bundles::host_platform();
  CheckOutcome out;
  std::string engine_sha256;
  if (!engine || !weights || !conformance) {
    out = {kCheckNone, "the bundle has no engine, weights or conformance member"};
  } else if (other_platform && host_engine.empty()) {
    out = {kCheckOtherPlatform, platforms};
  } else {
    std::string runner = other_platform ? host_engine : store.blob_path(engine->sha256);
    engine_sha256 = other_platform ? signing::sha256_file(host_engine).sha256 : engine->sha256;
    ReplayResult r = replay_blobs(store, m, *engine, *weights, *conformance, runner, {});
    if (!other_platform)
      out = {r.identical ? kCheckIdentical : kCheckMismatch, r.detail};
    else
      out = {r.identical ? kCheckHostEngine : kCheckMismatch,
             platforms + "; with this host's engine " + host_engine + ": " + r.detail};
  }
  store.set_check(bundle.id, out.result, out.detail, engine_sha256);
  return out;
}

CheckOutcome check_installed_on_gpu(Store& store, const BundleRow& bundle,
                                    const std::string& device) {
  bundles::Manifest m = bundles::parse_manifest(bundle.manifest_bytes, bundle.id);
  const bundles::Member* engine = m.find_role(bundles::Role::EngineCuda);
  const bundles::Member* weights = m.find_role(bundles::Role::Weights);
  const bundles::Member* conformance = m.find_role(bundles::Role::Conformance);
  if (!engine)
    return {kCheckNone, "the bundle has no CUDA engine (member role engine-cuda); it was built "
                        "by a galleon without the CUDA backend"};
  if (!weights || !conformance)
    return {kCheckNone, "the bundle has no weights or conformance member"};
  if (m.engine.platform != bundles::host_platform())
    return {kCheckOtherPlatform, "the engines are built for " + m.engine.platform +
                                     ", this host is " + bundles::host_platform()};
  ReplayResult r = replay_blobs(store, m, *engine, *weights, *conformance,
                                store.blob_path(engine->sha256), {"--device", device});
  return {r.identical ? kCheckIdentical : kCheckMismatch, "on " + device + ": " + r.detail};
}

}  // namespace galleon::pkg
