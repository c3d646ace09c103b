#include "pkg/crash_point.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <map>

namespace galleon::pkg {
namespace {

struct Selection {
  std::string name;
  long hit = 1;  // 1: the first time the point is reached
};

// "name" or "name:n"; an empty name when the variable is unset.
Selection selection() {
  const char* env = std::getenv("GALLEON_CRASH_AT");
  Selection s;
  if (env == nullptr) return s;
  std::string v = env;
  size_t colon = v.rfind(':');
  if (colon != std::string::npos) {
    s.hit = std::strtol(v.c_str() + colon + 1, nullptr, 10);
    v.resize(colon);
  }
  s.name = v;
  return s;
}

}  // namespace

const std::vector<std::string>& crash_points() {
  static const std::vector<std::string> points = {
      "install.member-staged",   // a new member is complete and fsynced in tmp/
      "install.blob-renamed",    // a staged member was renamed into blobs/
      "install.before-commit",   // every blob is placed; the rows are not yet written
      "install.after-commit",    // the rows are committed; tmp/ not yet cleaned, not checked
      "install.before-check",    // the conformance replay is about to run
      "remove.before-commit",    // the rows are deleted inside the open transaction
      "remove.after-commit",     // one bundle's rows are gone
      "gc.blob-deleted",         // one unused blob was deleted, others may remain
      "fetch.downloading",       // part of the bundle is in partial/ (each HTTP chunk, torrent poll)
      "fetch.downloaded",        // the whole file is in partial/, not yet verified
      "fetch.verified",          // the download verified; not yet installed
  };
  return points;
}

void crash_point(std::string_view name) {
  static const Selection selected = selection();
  if (selected.name.empty() || selected.name != name) return;
  static std::map<std::string, long, std::less<>> hits;
  if (++hits[std::string(name)] != selected.hit) return;
  ::raise(SIGKILL);
  ::_exit(137);  // not reached
}

}  // namespace galleon::pkg
