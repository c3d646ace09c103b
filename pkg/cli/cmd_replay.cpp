// galleon replay FILE: re-runs a run record (galleon run ... --record FILE) and says identical,
// or the first token where it diverged (exit 9).
#include <iostream>
#include <memory>

#include "pkg/cli/bundle_run.h"
#include "pkg/cli/command.h"
#include "runtime/error.h"
#include "signing/files.h"

namespace galleon::cli {
namespace {

const Registration reg{"replay", [](CLI::App& root, Context&) {
  auto file = std::make_shared<std::string>();
  CLI::App* cmd = root.add_subcommand("replay", "Re-run a run record and compare the output");
  cmd->add_option("FILE", *file, "Run record written by galleon run --record")->required();
  cmd->callback([file] {
    RunRecord record = RunRecord::parse(signing::read_file_capped(*file, 64 << 20), *file);
    ReplayOutcome r = replay_record(record);
    if (!r.identical) fail(ErrorKind::Mismatch, *file + ": MISMATCH: " + r.detail);
    std::cout << "identical: " << r.detail << "\n";
  });
}};

}  // namespace
}  // namespace galleon::cli
