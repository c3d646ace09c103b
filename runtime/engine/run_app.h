// Parses the command line and runs the chosen verb, turning errors into exit codes
// (docs/cli.md). Shared by galleon-engine and galleon: only main functions pick exit codes.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <new>

#include "runtime/error.h"

namespace galleon {

// Returns the exit code: `ok_code` (read after the verb ran) after success, the error kind's
// code after an Error.
inline int run_app(CLI::App& app, int argc, char** argv, const char* program,
                   const int& ok_code) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : exit_code(ErrorKind::Usage);
  } catch (const Error& e) {
    std::fflush(stdout);
    std::cerr << program << ": " << e.message() << "\n";
    return exit_code(e.kind());
  } catch (const std::bad_alloc&) {
    std::cerr << program << ": out of memory\n";
    return exit_code(ErrorKind::Io);
  } catch (const std::exception& e) {
    std::cerr << program << ": internal error: " << e.what() << "\n";
    return exit_code(ErrorKind::Internal);
  }
  return ok_code;
}

inline int run_app(CLI::App& app, int argc, char** argv, const char* program) {
  static const int kOk = 0;
  return run_app(app, argc, argv, program, kOk);
}

}  // namespace galleon
