// bundles: MANIFEST.json, the canonical JSON description of a bundle (docs/bundle-format.md).
// Bundle id = "sha256:" + hex sha256 of the MANIFEST.json bytes.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bundles/fields.h"

namespace galleon::bundles {

inline constexpr std::string_view kManifestFormat = "galleon-bundle/1";
inline constexpr std::string_view kEngineAbi = "galleon-engine/1";
inline constexpr uint64_t kMaxManifestSize = 1 << 20;

// EngineCuda: an optional second engine built with the CUDA backend (docs/cuda.md), run for
// --device cuda; linked dynamically against glibc, the GPU driver loaded at run time.
enum class Role { Engine, Weights, Tokenizer, Recipe, Conformance, License, EngineCuda };

// The roles whose members are executables (mode 0755).
inline bool is_engine(Role r) { return r == Role::Engine || r == Role::EngineCuda; }

const char* role_name(Role role);
std::optional<Role> parse_role(std::string_view name);

struct Member {
  std::string path;    // see member_path.h
  uint64_t size = 0;
  std::string sha256;  // 64 lowercase hex
  Role role = Role::Weights;

  bool operator==(const Member&) const = default;
};

struct EngineInfo {
  std::string platform;                     // "<os>-<arch>", e.g. "linux-x86_64"
  std::string abi = std::string(kEngineAbi);
  bool operator==(const EngineInfo&) const = default;
};

struct ModelFacts {
  std::string architecture;               // e.g. "llama"
  uint64_t n_params = 0;
  std::vector<std::string> tensor_types;  // sorted, distinct, e.g. {"f32", "q8_0"}
  bool operator==(const ModelFacts&) const = default;
};

struct Manifest {
  std::string name;
  std::string version;
  std::string description;
  std::string license;
  std::vector<Member> members;  // sorted bytewise by path, distinct
  EngineInfo engine;
  ModelFacts model;
  std::string recipe_sha256;    // Recipe::digest()
  SamplingDefaults defaults;

  // Error(Invalid) naming the field and what was expected when a rule is broken.
  void validate() const;
  nlohmann::json to_json() const;
  // Canonical JSON bytes (validates first).
  std::string to_bytes() const;
  // "sha256:" + hex sha256(to_bytes()).
  std::string id() const;

  const Member* find(std::string_view path) const;
  // The one member with `role`, or nullptr.
  const Member* find_role(Role role) const;
  // Sorts members by path (the order validate() requires).
  void sort_members();

  bool operator==(const Manifest&) const = default;
};

// Parses MANIFEST.json bytes: canonical JSON, every field known, present and valid.
// Error(Invalid) starting with `origin` and naming the field otherwise.
Manifest parse_manifest(std::string_view bytes, std::string_view origin);

// "sha256:" + hex sha256 of the manifest bytes.
std::string bundle_id_of(std::string_view manifest_bytes);

// A member entry for `file` on disk (streams it to get size and sha256).
Member describe_file(std::string path, Role role, const std::string& file);

// "linux-x86_64" style name of the platform this build runs on.
std::string host_platform();

}  // namespace galleon::bundles
