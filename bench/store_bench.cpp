// Install and verify throughput against one `sha256sum` pass over the same bundle file
// (issue target: install within 1.3x of sha256sum). Usage: store_bench [MiB] [work folder].
// Builds an unsigned bundle holding the galleon-engine beside this executable and MiB of
// pseudo-random "weights", then times, warm cache: sha256sum, BundleReader::verify (hash only)
// and pkg::install_bundle into a fresh store (--allow-untrusted --no-check: the member bytes are
// not a model). Every install fsyncs its blobs, sha256sum writes nothing.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "bundles/manifest.h"
#include "bundles/reader.h"
#include "bundles/writer.h"
#include "pkg/install.h"
#include "pkg/process.h"
#include "pkg/store.h"
#include "runtime/error.h"

namespace fsys = std::filesystem;
using namespace galleon;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string self_dir() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  std::string self(buf, n > 0 ? size_t(n) : 0);
  return self.substr(0, self.rfind('/'));
}

void write_random(const std::string& path, uint64_t bytes) {
  std::ofstream out(path, std::ios::binary);
  std::mt19937_64 rng(1);
  std::vector<uint64_t> block(1 << 17);
  for (uint64_t done = 0; done < bytes;) {
    for (auto& v : block) v = rng();
    uint64_t n = std::min<uint64_t>(bytes - done, block.size() * 8);
    out.write(reinterpret_cast<const char*>(block.data()), std::streamsize(n));
    done += n;
  }
}

std::string make_bundle(const std::string& dir, uint64_t bytes) {
  std::string engine = self_dir() + "/galleon-engine";
  std::string weights = dir + "/weights.bin";
  write_random(weights, bytes);
  bundles::Manifest m;
  m.name = "bench";
  m.version = "1";
  m.description = "store benchmark";
  m.license = "MIT";
  m.members = {bundles::describe_file("engine/galleon-engine", bundles::Role::Engine, engine),
               bundles::describe_file("model.gguf", bundles::Role::Weights, weights)};
  m.sort_members();
  m.engine.platform = bundles::host_platform();
  m.model = {"llama", 1, {"f32"}};
  m.recipe_sha256 = std::string(64, '0');
  std::string out = dir + "/bench-1.galleon";
  bundles::write_bundle(out, m, {},
                        {{"engine/galleon-engine", {engine, 0}}, {"model.gguf", {weights, 0}}});
  fsys::remove(weights);
  return out;
}

void report(const char* what, double secs, uint64_t bytes, double base) {
  double mbs = double(bytes) / (1024.0 * 1024.0) / secs;
  std::printf("%-28s %8.3f s %9.1f MiB/s  %5.2fx sha256sum\n", what, secs, mbs, secs / base);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    uint64_t mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1024;
    std::string dir = argc > 2 ? argv[2] : (fsys::temp_directory_path() / "galleon-store-bench").string();
    fsys::remove_all(dir);
    fsys::create_directories(dir);
    std::string bundle = make_bundle(dir, mib << 20);
    uint64_t size = fsys::file_size(bundle);
    pkg::run_process({"/usr/bin/sha256sum", bundle});  // warm the page cache

    auto t0 = std::chrono::steady_clock::now();
    pkg::run_process({"/usr/bin/sha256sum", bundle});
    double base = seconds_since(t0);
    report("sha256sum", base, size, base);

    t0 = std::chrono::steady_clock::now();
    bundles::BundleReader(bundle).verify();
    report("verify (hash only)", seconds_since(t0), size, base);

    pkg::InstallOptions options;
    options.allow_untrusted = true;
    options.no_check = true;
    pkg::Store store(pkg::Home{dir + "/home"}, pkg::StoreMode::Write);
    t0 = std::chrono::steady_clock::now();
    pkg::install_bundle(store, bundle, options, [](const std::string&) {});
    report("install (copy, fsync, record)", seconds_since(t0), size, base);
    fsys::permissions(dir, fsys::perms::owner_all, fsys::perm_options::add);
    for (auto& e : fsys::recursive_directory_iterator(dir))
      fsys::permissions(e.path(), fsys::perms::owner_all, fsys::perm_options::add);
    fsys::remove_all(dir);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "store_bench: %s\n", e.message().c_str());
    return exit_code(e.kind());
  }
}
