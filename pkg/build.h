// galleon build: turns a recipe into a signed, reproducible bundle (docs/build.md).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "bundles/recipe.h"
#include "pkg/home.h"

namespace galleon::pkg {

struct BuildOptions {
  std::string recipe_path;
  std::vector<std::string> source_dirs;  // searched first, in order
  bool offline = false;                  // never download
  std::vector<std::string> key_files;    // private keys to sign with
  std::string out_path;                  // empty: NAME-VERSION.galleon in the current folder
  std::string engine_path;               // the galleon-engine to bundle and run
  std::string cuda_engine_path;          // the galleon-engine-cuda to bundle (empty: none)
  bool progress = false;                 // download progress on stderr
  std::function<void(const std::string&)> note;  // informational lines (may be empty)
};

struct BuildResult {
  std::string bundle_id;
  std::string out_path;
};

// Locates one source: by file name, then by size and sha256 in each source folder; then the
// home's blob cache; then (unless offline) its URLs, downloaded into the home's tmp/.
// Every candidate is hashed; the returned file matched size and sha256. Downloads go into
// `download_dir`. Error(NotFound) naming the source and what was tried when nothing matched
// (Error(Network) or Error(Invalid) when downloads were tried and failed).
std::string find_source(const bundles::SourcePin& pin, const BuildOptions& options,
                        const Home& home, const std::string& download_dir);

BuildResult build_bundle(const BuildOptions& options, const Home& home);

}  // namespace galleon::pkg
