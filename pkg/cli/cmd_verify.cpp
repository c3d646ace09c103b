// galleon verify BUNDLE [--json]: exit 0 only when valid and trusted; 4 invalid; 5 untrusted.
#include <iostream>
#include <memory>

#include "pkg/cli/command.h"
#include "pkg/home.h"
#include "pkg/verify.h"
#include "signing/policy.h"

namespace galleon::cli {
namespace {

void print_text(const pkg::VerifyReport& r) {
  if (!r.id.empty()) std::cout << r.id << "\n" << r.name << " " << r.version << "\n";
  if (r.valid) std::cout << "valid: " << r.members << " members verified\n";
  for (const auto& c : r.policy.checks)
    std::cout << c.name << ": " << signing::signature_status_name(c.status) << ": " << c.reason
              << "\n";
  if (r.policy.checks.empty() && !r.id.empty()) std::cout << "no signatures\n";
  for (const auto& k : r.beside_keys)
    std::cout << "public key beside the bundle (never trusted by verify): " << k << "\n";
  if (r.valid && r.trusted) std::cout << "trusted\n";
}

struct Args {
  std::string bundle;
  bool json = false;
  int threshold = 1;
};

const Registration reg{"verify", [](CLI::App& root, Context& ctx) {
  auto a = std::make_shared<Args>();
  CLI::App* cmd = root.add_subcommand("verify", "Check a bundle's members, signatures and trust");
  cmd->add_option("BUNDLE", a->bundle, "Bundle file")->required();
  cmd->add_flag("--json", a->json, "Print one JSON object");
  cmd->add_option("--threshold", a->threshold,
                  "Valid signatures by distinct trusted keys required (default 1)")
      ->check(CLI::Range(1, 1000));
  cmd->callback([a, &ctx] {
    pkg::VerifyReport r = pkg::verify_bundle(a->bundle, pkg::home_from_env(), a->threshold);
    if (a->json)
      std::cout << r.to_json().dump() << "\n";
    else
      print_text(r);
    if (r.valid && r.trusted) return;
    std::cout.flush();
    std::cerr << "galleon: " << r.problem << "\n";
    ctx.exit_code = exit_code(r.outcome());
  });
}};

}  // namespace
}  // namespace galleon::cli
