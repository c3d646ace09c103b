#include "runtime/llama2c.h"

#include <cstring>
#include <fstream>
#include <limits>
#include <vector>

#include "runtime/error.h"
#include "runtime/gguf.h"

namespace galleon {
namespace {

struct Header {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
  bool shared_classifier;
};

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) fail(ErrorKind::NotFound, path + ": cannot open");
  std::streamoff n = f.tellg();
  if (n < 0) fail(ErrorKind::Io, path + ": cannot read");
  std::vector<uint8_t> data(static_cast<size_t>(n));
  f.seekg(0);
  if (n > 0 && !f.read(reinterpret_cast<char*>(data.data()), n))
    fail(ErrorKind::Io, path + ": read error");
  return data;
}

// Sequential checked reader over a byte buffer.
class Cursor {
 public:
  Cursor(const std::vector<uint8_t>& d, std::string name) : d_(d), name_(std::move(name)) {}
  template <class T>
  T read(const char* what) {
    T v;
    need(sizeof v, what);
    std::memcpy(&v, d_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }
  const uint8_t* take(uint64_t n, const char* what) {
    need(n, what);
    const uint8_t* p = d_.data() + pos_;
    pos_ += size_t(n);
    return p;
  }
  uint64_t remaining() const { return d_.size() - pos_; }

 private:
  void need(uint64_t n, const char* what) {
    if (n > remaining())
      fail(ErrorKind::Invalid, name_ + ": truncated while reading " + what + " (need " +
                                   std::to_string(n) + " bytes, " +
                                   std::to_string(remaining()) + " remain)");
  }
  const std::vector<uint8_t>& d_;
  std::string name_;
  size_t pos_ = 0;
};

void check_field(const std::string& file, const char* field, int32_t v, int32_t max) {
  if (v <= 0 || v > max)
    fail(ErrorKind::Invalid, file + ": header field " + field + " = " + std::to_string(v) +
                                 ", expected 1.." + std::to_string(max));
}

Header read_header(Cursor& c, const std::string& file) {
  Header h{};
  h.dim = c.read<int32_t>("header dim");
  h.hidden_dim = c.read<int32_t>("header hidden_dim");
  h.n_layers = c.read<int32_t>("header n_layers");
  h.n_heads = c.read<int32_t>("header n_heads");
  h.n_kv_heads = c.read<int32_t>("header n_kv_heads");
  h.vocab_size = c.read<int32_t>("header vocab_size");
  h.seq_len = c.read<int32_t>("header seq_len");
  h.shared_classifier = h.vocab_size > 0;
  if (h.vocab_size < 0 && h.vocab_size != std::numeric_limits<int32_t>::min())
    h.vocab_size = -h.vocab_size;
  check_field(file, "dim", h.dim, 1 << 16);
  check_field(file, "hidden_dim", h.hidden_dim, 1 << 18);
  check_field(file, "n_layers", h.n_layers, 1024);
  check_field(file, "n_heads", h.n_heads, 1024);
  check_field(file, "n_kv_heads", h.n_kv_heads, 1024);
  check_field(file, "vocab_size", h.vocab_size, 1 << 20);
  check_field(file, "seq_len", h.seq_len, 1 << 20);
  if (h.dim % h.n_heads != 0 || (h.dim / h.n_heads) % 2 != 0)
    fail(ErrorKind::Invalid, file + ": dim " + std::to_string(h.dim) +
                                 " is not an even multiple of n_heads " + std::to_string(h.n_heads));
  if (h.n_heads % h.n_kv_heads != 0)
    fail(ErrorKind::Invalid, file + ": n_heads is not a multiple of n_kv_heads");
  return h;
}

// Reads `count` f32 matrices of [rows][cols] (row-major, as llama2.c stores them).
std::vector<const uint8_t*> take_stack(Cursor& c, int64_t count, int64_t rows, int64_t cols,
                                       const char* what, uint64_t* bytes_each) {
  *bytes_each = uint64_t(rows) * uint64_t(cols) * 4;
  std::vector<const uint8_t*> out;
  for (int64_t i = 0; i < count; ++i) out.push_back(c.take(*bytes_each, what));
  return out;
}

struct Vocab {
  std::vector<GgufValue> tokens, scores, types;
};

Vocab read_vocab(const std::string& path, int32_t vocab_size) {
  std::vector<uint8_t> data = read_all(path);
  Cursor c(data, path);
  int32_t max_len = c.read<int32_t>("max_token_length");
  if (max_len <= 0 || max_len > (1 << 16))
    fail(ErrorKind::Invalid, path + ": max_token_length " + std::to_string(max_len) +
                                 " is out of range");
  Vocab v;
  for (int32_t i = 0; i < vocab_size; ++i) {
    float score = c.read<float>("a token score");
    int32_t len = c.read<int32_t>("a token length");
    if (len < 0 || len > max_len)
      fail(ErrorKind::Invalid, path + ": token " + std::to_string(i) + " has length " +
                                   std::to_string(len) + ", expected 0.." +
                                   std::to_string(max_len));
    const uint8_t* p = c.take(uint64_t(len), "a token's text");
    std::string text(reinterpret_cast<const char*>(p), size_t(len));
    int32_t type = 1;  // normal
    if (i == 0) {
      text = "<unk>", type = 2;
    } else if (i == 1) {
      text = "<s>", type = 3;
    } else if (i == 2) {
      text = "</s>", type = 3;
    } else if (text.size() == 6 && text.compare(0, 3, "<0x") == 0 && text[5] == '>') {
      type = 6;
    } else {
      std::string t;
      for (char ch : text) t += (ch == ' ') ? std::string("\xe2\x96\x81") : std::string(1, ch);
      text = t;
    }
    v.tokens.push_back(GgufValue::make_string(text));
    v.scores.push_back(GgufValue::make_f32(score));
    v.types.push_back(GgufValue::make_i32(type));
  }
  if (c.remaining() != 0)
    fail(ErrorKind::Invalid, path + ": " + std::to_string(c.remaining()) +
                                 " unexpected bytes after " + std::to_string(vocab_size) +
                                 " tokens");
  return v;
}

void add_matrix(GgufWriter& w, const std::string& name, const uint8_t* data, int64_t rows,
                int64_t cols) {
  w.add_tensor(name, GgmlType::F32, {cols, rows}, data, size_t(rows * cols * 4));
}

void set_metadata(GgufWriter& w, const Header& h, Vocab& v) {
  const uint32_t head = uint32_t(h.dim / h.n_heads);
  w.set("general.architecture", GgufValue::make_string("llama"));
  w.set("general.name", GgufValue::make_string("llama2.c"));
  w.set("llama.context_length", GgufValue::make_u32(uint32_t(h.seq_len)));
  w.set("llama.embedding_length", GgufValue::make_u32(uint32_t(h.dim)));
  w.set("llama.feed_forward_length", GgufValue::make_u32(uint32_t(h.hidden_dim)));
  w.set("llama.block_count", GgufValue::make_u32(uint32_t(h.n_layers)));
  w.set("llama.attention.head_count", GgufValue::make_u32(uint32_t(h.n_heads)));
  w.set("llama.attention.head_count_kv", GgufValue::make_u32(uint32_t(h.n_kv_heads)));
  w.set("llama.rope.dimension_count", GgufValue::make_u32(head));
  w.set("llama.rope.freq_base", GgufValue::make_f32(10000.0f));
  w.set("llama.attention.layer_norm_rms_epsilon", GgufValue::make_f32(1e-5f));
  w.set("tokenizer.ggml.model", GgufValue::make_string("llama"));
  w.set("tokenizer.ggml.tokens", GgufValue::make_array(GgufValueType::STRING, std::move(v.tokens)));
  w.set("tokenizer.ggml.scores", GgufValue::make_array(GgufValueType::F32, std::move(v.scores)));
  w.set("tokenizer.ggml.token_type", GgufValue::make_array(GgufValueType::I32, std::move(v.types)));
  w.set("tokenizer.ggml.unknown_token_id", GgufValue::make_u32(0));
  w.set("tokenizer.ggml.bos_token_id", GgufValue::make_u32(1));
  w.set("tokenizer.ggml.eos_token_id", GgufValue::make_u32(2));
  w.set("tokenizer.ggml.add_bos_token", GgufValue::make_bool(true));
}

}  // namespace

void convert_llama2c(const std::string& checkpoint_path, const std::string& tokenizer_path,
                     GgufWriter& w) {
  std::vector<uint8_t> data = read_all(checkpoint_path);
  Cursor c(data, checkpoint_path);
  const Header h = read_header(c, checkpoint_path);
  Vocab vocab = read_vocab(tokenizer_path, h.vocab_size);
  const int64_t d = h.dim, ff = h.hidden_dim, L = h.n_layers, V = h.vocab_size;
  const int64_t head = d / h.n_heads, kv = head * h.n_kv_heads;
  uint64_t b = 0;
  const uint8_t* emb = c.take(uint64_t(V * d * 4), "token_embedding_table");
  auto att_norm = take_stack(c, L, 1, d, "rms_att_weight", &b);
  auto wq = take_stack(c, L, d, d, "wq", &b);
  auto wk = take_stack(c, L, kv, d, "wk", &b);
  auto wv = take_stack(c, L, kv, d, "wv", &b);
  auto wo = take_stack(c, L, d, d, "wo", &b);
  auto ffn_norm = take_stack(c, L, 1, d, "rms_ffn_weight", &b);
  auto w1 = take_stack(c, L, ff, d, "w1", &b);
  auto w2 = take_stack(c, L, d, ff, "w2", &b);
  auto w3 = take_stack(c, L, ff, d, "w3", &b);
  const uint8_t* final_norm = c.take(uint64_t(d * 4), "rms_final_weight");
  c.take(uint64_t(h.seq_len) * uint64_t(head) * 4, "freq_cis_real and freq_cis_imag");
  const uint8_t* wcls = h.shared_classifier ? nullptr : c.take(uint64_t(V * d * 4), "wcls");
  if (c.remaining() != 0)
    fail(ErrorKind::Invalid, checkpoint_path + ": " + std::to_string(c.remaining()) +
                                 " unexpected bytes after the weights");
  set_metadata(w, h, vocab);
  add_matrix(w, "token_embd.weight", emb, V, d);
  w.add_tensor("output_norm.weight", GgmlType::F32, {d}, final_norm, size_t(d * 4));
  if (wcls) add_matrix(w, "output.weight", wcls, V, d);
  for (int64_t i = 0; i < L; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    const size_t k = size_t(i);
    w.add_tensor(p + "attn_norm.weight", GgmlType::F32, {d}, att_norm[k], size_t(d * 4));
    add_matrix(w, p + "attn_q.weight", wq[k], d, d);
    add_matrix(w, p + "attn_k.weight", wk[k], kv, d);
    add_matrix(w, p + "attn_v.weight", wv[k], kv, d);
    add_matrix(w, p + "attn_output.weight", wo[k], d, d);
    w.add_tensor(p + "ffn_norm.weight", GgmlType::F32, {d}, ffn_norm[k], size_t(d * 4));
    add_matrix(w, p + "ffn_gate.weight", w1[k], ff, d);
    add_matrix(w, p + "ffn_down.weight", w2[k], d, ff);
    add_matrix(w, p + "ffn_up.weight", w3[k], ff, d);
  }
}

void convert_llama2c_file(const std::string& checkpoint_path, const std::string& tokenizer_path,
                          const std::string& out_path) {
  GgufWriter w;
  convert_llama2c(checkpoint_path, tokenizer_path, w);
  w.write_file(out_path);
}

}  // namespace galleon
