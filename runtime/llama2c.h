// Import of llama2.c checkpoints (karpathy/llama2.c "version 0" float32 format) and their
// tokenizer.bin into GGUF (architecture llama, tokenizer model llama). docs/llama2c.md.
#pragma once

#include <string>

namespace galleon {

class GgufWriter;

// Builds the GGUF in memory-light form (tensors are copied once into the writer).
// Errors name the file and the field that is wrong.
void convert_llama2c(const std::string& checkpoint_path, const std::string& tokenizer_path,
                     GgufWriter& out);

// Convenience: convert and write to out_path (via out_path.tmp + rename). Same inputs give the
// same bytes.
void convert_llama2c_file(const std::string& checkpoint_path, const std::string& tokenizer_path,
                          const std::string& out_path);

}  // namespace galleon
