// Where the store lives: GALLEON_HOME, else $XDG_DATA_HOME/galleon, else ~/.local/share/galleon.
// Layout (docs/store.md): store.db, blobs/sha256/ab/cdef..., tmp/, trust/.
#pragma once

#include <string>

namespace galleon::pkg {

struct Home {
  std::string root;
  std::string db() const { return root + "/store.db"; }
  std::string blobs() const { return root + "/blobs/sha256"; }
  std::string tmp() const { return root + "/tmp"; }
  std::string trust() const { return root + "/trust"; }
};

// Resolves the home from the environment (does not create anything).
Home home_from_env();
// Creates root, blobs/, tmp/ and trust/ when missing (mode 0755). Error(Io) on failure.
void ensure_home(const Home& h);

}  // namespace galleon::pkg
