#include "pkg/home.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "runtime/error.h"

namespace galleon::pkg {
namespace {

void make_dirs(const std::string& path) {
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    cur = path.substr(0, pos);
    if (cur.empty()) continue;
    if (mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
      fail(ErrorKind::Io, cur + ": cannot create the folder: " + std::strerror(errno));
  }
}

}  // namespace

Home home_from_env() {
  if (const char* h = std::getenv("GALLEON_HOME"); h && *h) return {h};
  if (const char* x = std::getenv("XDG_DATA_HOME"); x && *x) return {std::string(x) + "/galleon"};
  const char* home = std::getenv("HOME");
  if (!home || !*home)
    fail(ErrorKind::Usage, "neither GALLEON_HOME, XDG_DATA_HOME nor HOME is set");
  return {std::string(home) + "/.local/share/galleon"};
}

void ensure_home(const Home& h) {
  for (const std::string& d : {h.root, h.blobs(), h.tmp(), h.trust()}) make_dirs(d);
}

}  // namespace galleon::pkg
