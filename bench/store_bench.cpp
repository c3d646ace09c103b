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
#include "bench/bench_bundle.h"
#include "pkg/install.h"
#include "pkg/process.h"
#include "pkg/store.h"
#include "runtime/error.h"

namespace fsys = std::filesystem;
using namespace galleon;

namespace {

using bench::seconds_since;

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
    std::string bundle = bench::make_bundle(dir, mib << 20, "store benchmark");
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
