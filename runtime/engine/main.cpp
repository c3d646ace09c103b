#include <cstdio>
#include <iostream>

#include "runtime/cuda/cuda_backend.h"
#include "runtime/engine/verbs.h"
#include "runtime/engine/run_app.h"
#include "runtime/error.h"
#include "runtime/kernels.h"

int main(int argc, char** argv) {
  using namespace galleon;
  CLI::App app{"galleon-engine: the bit-reproducible inference engine a galleon bundle carries"};
  app.require_subcommand(1);
  engine::add_run(app);
  engine::add_score(app);
  engine::add_tokenize(app);
  engine::add_inspect(app);
  auto* abi = app.add_subcommand("abi", "Print the engine ABI version and instruction-set paths");
  abi->callback([] {
    nlohmann::json isas = nlohmann::json::array();
    for (auto isa : {kern::Isa::Scalar, kern::Isa::Sse2, kern::Isa::Avx2, kern::Isa::Avx512,
                     kern::Isa::Neon})
      if (kern::isa_available(isa)) isas.push_back(kern::isa_name(isa));
    engine::print_json({{"abi", engine::kAbi}, {"isa", isas},
                        {"default_isa", kern::isa_name(kern::best_isa())},
                        {"cuda", cuda::built()}});
  });
  return run_app(app, argc, argv, "galleon-engine");
}
