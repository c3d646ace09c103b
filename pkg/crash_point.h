// pkg: test-only crash points (docs/hardening.md). When the environment variable
// GALLEON_CRASH_AT names a point ("install.blob-renamed"), or a point and a hit count
// ("install.blob-renamed:2" for the second time the point is reached), the process kills itself
// with SIGKILL there, as a power cut or `kill -9` would: no destructor, no flush, no cleanup.
// Unset (always, outside the crash tests) it does nothing. This is the one deliberate exception
// to "library code never exits".
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace galleon::pkg {

// Every point that the store code reaches, in the order an operation reaches them
// (`galleon debug crash-points` prints them; tests/crash_test.cpp iterates them).
const std::vector<std::string>& crash_points();

// Kills the process when GALLEON_CRASH_AT selects this point and hit; otherwise returns.
// `name` must be one of crash_points().
void crash_point(std::string_view name);

}  // namespace galleon::pkg
