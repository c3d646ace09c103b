// Downloads with libcurl (docs/build.md): http, https and file URLs only, TLS verification on,
// a hard size cap, a low-speed timeout, and Range resume of a partial file.
#pragma once

#include <cstdint>
#include <string>

namespace galleon::pkg {

struct DownloadOptions {
  uint64_t max_size = 0;            // refuse more bytes than this (the pinned size); required
  long connect_timeout_s = 30;      // connection phase
  long low_speed_bytes = 1024;      // abort when slower than this ...
  long low_speed_time_s = 60;       // ... for this many seconds
  int attempts = 3;                 // tries per URL, each resuming where the last one stopped
  bool progress = false;            // a progress line on stderr (callers pass isatty(2))
};

// True for an http://, https:// or file:// URL.
bool is_supported_url(const std::string& url);

// Downloads `url` into `dest`. When `dest` already holds a prefix (an interrupted download), the
// transfer resumes with a Range request; a server that ignores the range restarts the file.
// Error(Network) naming the URL on HTTP 4xx/5xx, timeouts, connection or TLS failures;
// Error(Invalid) when the server sends more than max_size bytes; Error(Usage) for another scheme;
// Error(Io) when `dest` cannot be written. `dest` is left in place on failure (to resume).
void download(const std::string& url, const std::string& dest, const DownloadOptions& options);

}  // namespace galleon::pkg
