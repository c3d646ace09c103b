// galleon convert CHECKPOINT.bin --tokenizer TOKENIZER.bin --out MODEL.gguf
#include <iostream>
#include <memory>

#include "pkg/cli/command.h"
#include "runtime/llama2c.h"

namespace galleon::cli {
namespace {

struct ConvertArgs {
  std::string checkpoint, tokenizer, out;
};

const Registration reg{"convert", [](CLI::App& root, Context&) {
  auto a = std::make_shared<ConvertArgs>();
  CLI::App* cmd = root.add_subcommand("convert", "Convert a llama2.c checkpoint to GGUF");
  cmd->add_option("CHECKPOINT", a->checkpoint, "llama2.c checkpoint (.bin)")->required();
  cmd->add_option("--tokenizer", a->tokenizer, "llama2.c tokenizer (.bin)")->required();
  cmd->add_option("--out,-o", a->out, "GGUF file to write")->required();
  cmd->callback([a] {
    convert_llama2c_file(a->checkpoint, a->tokenizer, a->out);
    std::cerr << "wrote " << a->out << "\n";
  });
}};

}  // namespace
}  // namespace galleon::cli
