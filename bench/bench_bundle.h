// Shared by the store and transfer benchmarks: a large bundle of the host engine and seeded
// random "weights", made with the bundles writer.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "bundles/manifest.h"
#include "bundles/writer.h"

namespace galleon::bench {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The folder of this executable (build/bin), where galleon and galleon-engine are.
inline std::string self_dir() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  std::string self(buf, n > 0 ? size_t(n) : 0);
  return self.substr(0, self.rfind('/'));
}

inline void write_random(const std::string& path, uint64_t bytes) {
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

// dir/bench-1.galleon: engine + `bytes` of random weights, unsigned.
inline std::string make_bundle(const std::string& dir, uint64_t bytes,
                               const std::string& description) {
  const std::string engine = self_dir() + "/galleon-engine";
  const std::string weights = dir + "/weights.bin";
  write_random(weights, bytes);
  bundles::Manifest m;
  m.name = "bench";
  m.version = std::string("1");  // not = "1", which GCC 12 warns of falsely (-Wrestrict)
  m.description = description;
  m.license = "MIT";
  m.members = {bundles::describe_file("engine/galleon-engine", bundles::Role::Engine, engine),
               bundles::describe_file("model.gguf", bundles::Role::Weights, weights)};
  m.sort_members();
  m.engine.platform = bundles::host_platform();
  m.model = {"llama", 1, {"f32"}};
  m.recipe_sha256 = std::string(64, '0');
  const std::string out = dir + "/bench-1.galleon";
  bundles::write_bundle(out, m, {},
                        {{"engine/galleon-engine", {engine, 0}}, {"model.gguf", {weights, 0}}});
  std::filesystem::remove(weights);
  return out;
}

}  // namespace galleon::bench
