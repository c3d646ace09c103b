#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "runtime/engine/verbs.h"
#include "runtime/error.h"

namespace galleon::engine {

void ModelArg::add_to(CLI::App* cmd, const char* positional_name) {
  cmd->add_option(positional_name, path, "GGUF model file")->required();
  cmd->add_option("--model-offset", offset, "Byte offset of the GGUF inside MODEL (bundles)")
      ->group("");
  cmd->add_option("--model-size", size, "Byte size of the GGUF inside MODEL (bundles)")->group("");
  cmd->add_flag("--mmap", mmap,
                "Map the weights from the file (page cache) instead of reading them into memory "
                "on huge pages; never changes results");
}

// run and score read every weight per token. By default they are read into memory on 2 MiB
// pages where the kernel gives them (Residence::Memory: faster decoding); with --mmap, or for an
// image too large for memory, they are mapped, all pages now (prefault; nothing to do for an
// image in memory), as llama.cpp does (MAP_POPULATE), rather than page by page during the first
// evaluation.
LoadedModel ModelArg::load() const {
  LoadedModel m = load_model(path, offset, size, mmap ? Residence::Mapped : Residence::Memory);
  m.file->prefault();
  return m;
}

void ComputeArgs::add_to(CLI::App* cmd) {
  cmd->add_option("--threads", threads, "Worker threads (default: all CPUs); never changes results")
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--batch", batch, "Prompt tokens evaluated per step; never changes results")
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--device", device,
                  "cpu (default), cuda or cuda:N (a CUDA GPU); never changes results");
}

ComputeOptions ComputeArgs::options() const {
  ComputeOptions c = default_compute_options();
  c.n_threads = threads;
  c.max_batch = batch;
  c.device = parse_device(device);
  return c;
}

std::string text_or_file(const std::string& text, const std::string& file, bool text_given,
                         bool file_given, const char* text_flag) {
  if (text_given == file_given)
    fail(ErrorKind::Usage, std::string("give exactly one of ") + text_flag + " and --file");
  if (text_given) return text;
  std::ifstream f(file, std::ios::binary);
  if (!f) fail(ErrorKind::NotFound, file + ": cannot open the input file");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail(ErrorKind::Io, file + ": read error");
  return ss.str();
}

std::vector<int32_t> tokenize(const LoadedModel& m, const std::string& text, bool no_bos,
                              bool parse_special) {
  return m.tokenizer->encode(text, !no_bos && m.tokenizer->add_bos_default(), parse_special);
}

void print_json(const nlohmann::json& j) {
  std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

}  // namespace galleon::engine
