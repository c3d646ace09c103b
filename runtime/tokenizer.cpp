// Tokenizer construction from GGUF metadata and the model-independent parts of encoding
// (special tokens, BOS/EOS, pieces). Behaviour: docs/tokenizers.md.
#include "runtime/tokenizer.h"

#include <algorithm>
#include <cctype>

#include "runtime/error.h"
#include "runtime/gguf.h"
#include "runtime/tokenizer_internal.h"

namespace galleon {

namespace tok {

namespace {

bool is_c_space(char c) {  // isspace() in the C locale, as llama.cpp uses it
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

std::string lowercase_ascii(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The text with each kSpaceMark as a space.
std::string unescape_spaces(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, kSpaceMark.size(), kSpaceMark) == 0) {
      out.push_back(' ');
      i += kSpaceMark.size();
    } else {
      out.push_back(text[i++]);
    }
  }
  return out;
}

// "<0xXX>" gives the byte XX; any other text is returned as is.
std::string sentencepiece_byte(const std::string& t) {
  auto hexval = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && hexval(t[3]) >= 0 &&
      hexval(t[4]) >= 0) {
    return std::string(1, char(hexval(t[3]) * 16 + hexval(t[4])));
  }
  return t;
}

}  // namespace

PrefixMatcher::PrefixMatcher(const std::vector<std::string>& tokens,
                             const std::vector<TokenId>& ids) {
  sorted_.reserve(ids.size());
  for (TokenId id : ids) sorted_.push_back({tokens[size_t(id)], id});
  std::sort(sorted_.begin(), sorted_.end(), [](const Entry& a, const Entry& b) {
    return a.text != b.text ? a.text < b.text : a.id < b.id;
  });
}

VocabTokenizer::VocabTokenizer(const VocabData& v) {
  tokens_ = v.tokens;
  attrs_ = v.attrs;
  scores_ = v.scores;
  model_ = v.model;
  pre_ = v.pre;
  ids_.reserve(tokens_.size() * 2);
  for (size_t i = 0; i < tokens_.size(); ++i) ids_[tokens_[i]] = TokenId(i);  // later ids win
  bos_ = v.bos.value_or(-1);
  eos_ = v.eos.value_or(-1);
  unk_ = v.unk.value_or(-1);
  add_eos_ = v.add_eos.value_or(false);
  for (auto id : {v.eos, v.eot, v.eom}) {
    if (id && std::find(end_ids_.begin(), end_ids_.end(), *id) == end_ids_.end()) {
      end_ids_.push_back(*id);
    }
  }
  build_specials(v);
}

void VocabTokenizer::build_specials(const VocabData& v) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    TokenAttr a = attrs_[i];
    if (a == TokenAttr::Control || a == TokenAttr::UserDefined || a == TokenAttr::Unknown) {
      specials_.push_back(TokenId(i));
    }
  }
  std::stable_sort(specials_.begin(), specials_.end(), [&](TokenId a, TokenId b) {
    return tokens_[size_t(a)].size() > tokens_[size_t(b)].size();
  });
  lstrip_.assign(tokens_.size(), 0);
  rstrip_.assign(tokens_.size(), 0);
  // llama.cpp: Phi-3 vocabularies (by general.name) strip whitespace after special tokens.
  std::string name = lowercase_ascii(v.general_name);
  if (name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos) {
    for (TokenId id : specials_) rstrip_[size_t(id)] = 1;
    if (TokenId id = find_token("</s>"); id >= 0) rstrip_[size_t(id)] = 1;
    for (const char* t : {"<unk>", "<s>", "<|endoftext|>"}) {
      if (TokenId id = find_token(t); id >= 0) rstrip_[size_t(id)] = 0;
    }
  }
}

TokenId VocabTokenizer::find_token(std::string_view text) const {
  auto it = ids_.find(text);
  return it == ids_.end() ? -1 : it->second;
}

std::vector<VocabTokenizer::Fragment> VocabTokenizer::split_on(
    std::string_view text, const std::vector<Fragment>& in, TokenId special) const {
  const std::string& tok = tokens_[size_t(special)];
  const bool lstrip = lstrip_[size_t(special)], rstrip = rstrip_[size_t(special)];
  std::vector<Fragment> out;
  out.reserve(in.size());
  for (const Fragment& f : in) {
    if (f.token >= 0) { out.push_back(f); continue; }
    size_t off = f.offset, len = f.length;
    while (len > 0) {
      size_t end = off + len;
      size_t m = text.substr(0, end).find(tok, off);
      if (m == std::string_view::npos) { out.push_back({-1, off, len}); break; }
      size_t left = m - off;
      while (lstrip && left > 0 && is_c_space(text[off + left - 1])) --left;
      if (left > 0) out.push_back({-1, off, left});
      out.push_back({special, m, tok.size()});
      off = m + tok.size();
      len = end - off;
      while (rstrip && len > 0 && is_c_space(text[off])) { ++off; --len; }
    }
  }
  return out;
}

std::vector<VocabTokenizer::Fragment> VocabTokenizer::partition(std::string_view text,
                                                                bool parse_special) const {
  std::vector<Fragment> frags;
  if (text.empty()) return frags;
  frags.push_back({-1, 0, text.size()});
  for (TokenId id : specials_) {
    TokenAttr a = attrs_[size_t(id)];
    if (!parse_special && (a == TokenAttr::Control || a == TokenAttr::Unknown)) continue;
    const std::string& t = tokens_[size_t(id)];
    if (t.empty() || text.find(t) == std::string_view::npos) continue;
    frags = split_on(text, frags, id);
  }
  return frags;
}

std::vector<TokenId> VocabTokenizer::encode(std::string_view text, bool add_bos,
                                            bool parse_special) const {
  std::vector<TokenId> out;
  if (add_bos && add_bos_ && bos_ >= 0) out.push_back(bos_);
  bool after_special = true;
  for (const Fragment& f : partition(text, parse_special)) {
    if (f.token >= 0) {
      out.push_back(f.token);
      after_special = true;
    } else {
      encode_text(text.substr(f.offset, f.length), after_special, out);
      after_special = false;
    }
  }
  if (add_bos && add_eos_ && eos_ >= 0) out.push_back(eos_);
  return out;
}

std::string VocabTokenizer::normal_piece(const std::string& text) const {
  return unescape_spaces(text);
}

std::string VocabTokenizer::byte_piece(TokenId id) const {
  return sentencepiece_byte(tokens_[size_t(id)]);
}

std::string VocabTokenizer::piece(TokenId id) const {
  if (id < 0 || size_t(id) >= tokens_.size()) {
    fail(ErrorKind::Invalid, "token id " + std::to_string(id) + " out of range (vocabulary of " +
                                 std::to_string(tokens_.size()) + ")");
  }
  switch (attrs_[size_t(id)]) {
    case TokenAttr::UserDefined: return tokens_[size_t(id)];
    case TokenAttr::Normal: return normal_piece(tokens_[size_t(id)]);
    case TokenAttr::Byte: return byte_piece(id);
    default: return "";  // control, unknown, unused, undefined
  }
}

namespace {

// llama.cpp finds end-of-turn tokens missing from the metadata by their text and makes them
// control tokens (so they are no longer matched in plain text). Where several are present, the
// first name in the list wins (llama.cpp leaves that to hash-map order).
void detect_end_token(VocabData& v, std::optional<TokenId>& slot,
                      std::initializer_list<std::string_view> names) {
  if (slot) return;
  std::vector<TokenId> found(names.size(), -1);
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    size_t k = 0;
    for (std::string_view n : names) {
      if (v.tokens[i] == n) found[k] = TokenId(i);  // the last duplicate, like the id map
      ++k;
    }
  }
  for (TokenId id : found) {
    if (id < 0) continue;
    slot = id;
    v.attrs[size_t(id)] = TokenAttr::Control;
    return;
  }
}

void detect_end_tokens(VocabData& v) {
  detect_end_token(v, v.eot,
                   {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                    "<|end_of_text|>", "<EOT>", "_<EOT>", "<｜end▁of▁sentence｜>",
                    "<end_of_utterance>"});
  detect_end_token(v, v.eom, {"<|eom_id|>"});
}

}  // namespace

std::unique_ptr<Tokenizer> from_vocab(const VocabData& vocab) {
  VocabData v = vocab;
  detect_end_tokens(v);
  if (v.model == "llama") return make_spm(v);
  if (v.model == "gpt2") return make_bpe(v);
  if (v.model == "bert") return make_wpm(v);
  if (v.model == "t5") return make_ugm(v);
  fail(ErrorKind::Unsupported, v.source + ": tokenizer.ggml.model '" + v.model +
                                   "' is not supported (llama, gpt2, bert, t5)");
}

}  // namespace tok

namespace {

using tok::VocabData;

int64_t int_value(const GgufValue& v) {
  switch (v.type) {
    case GgufValueType::I8: case GgufValueType::I16: case GgufValueType::I32:
    case GgufValueType::I64: return v.i;
    default: return int64_t(v.u);
  }
}

[[noreturn]] void invalid(const GgufFile& f, std::string_view key, const std::string& what) {
  fail(ErrorKind::Invalid, f.name() + ": " + std::string(key) + ": " + what);
}

void check_length(const GgufFile& f, std::string_view key, size_t n, size_t n_tokens) {
  if (n != n_tokens) {
    invalid(f, key, std::to_string(n) + " entries, but tokenizer.ggml.tokens has " +
                        std::to_string(n_tokens));
  }
}

std::optional<TokenId> token_id(const GgufFile& f, std::string_view key, size_t n_tokens) {
  std::optional<int64_t> v = f.get_i64_opt(key);
  if (!v || *v == -1 || *v == 0xFFFFFFFFll) return std::nullopt;  // -1: "none" by convention
  if (*v < 0 || uint64_t(*v) >= n_tokens) {
    invalid(f, key, "token id " + std::to_string(*v) + " out of range (vocabulary of " +
                        std::to_string(n_tokens) + ")");
  }
  return TokenId(*v);
}

void read_tokens(const GgufFile& f, VocabData& v) {
  const auto* tokens = f.get_array("tokenizer.ggml.tokens", GgufValueType::STRING);
  if (tokens == nullptr || tokens->empty()) invalid(f, "tokenizer.ggml.tokens", "missing or empty");
  if (tokens->size() > size_t(INT32_MAX)) invalid(f, "tokenizer.ggml.tokens", "too many tokens");
  v.tokens.reserve(tokens->size());
  for (size_t i = 0; i < tokens->size(); ++i) {
    const std::string& s = (*tokens)[i].s;
    v.tokens.push_back(s.empty() ? "[EMPTY_" + std::to_string(i) + "]" : s);  // as llama.cpp
  }
  const size_t n = v.tokens.size();
  if (const auto* scores = f.get_array("tokenizer.ggml.scores", GgufValueType::F32)) {
    check_length(f, "tokenizer.ggml.scores", scores->size(), n);
    for (const auto& s : *scores) v.scores.push_back(float(s.f));
  }
  v.attrs.assign(n, TokenAttr::Normal);
  if (const auto* types = f.get_array("tokenizer.ggml.token_type", GgufValueType::I32)) {
    check_length(f, "tokenizer.ggml.token_type", types->size(), n);
    for (size_t i = 0; i < n; ++i) {
      int64_t t = int_value((*types)[i]);
      v.attrs[i] = (t >= 0 && t <= 6) ? TokenAttr(t) : TokenAttr::Undefined;
    }
  }
  if (const auto* merges = f.get_array("tokenizer.ggml.merges", GgufValueType::STRING)) {
    for (const auto& m : *merges) v.merges.push_back(m.s);
  }
}

// An array of bytes (u8 or i8, as llama.cpp accepts either).
void read_charsmap(const GgufFile& f, VocabData& v) {
  constexpr std::string_view key = "tokenizer.ggml.precompiled_charsmap";
  const GgufValue* m = f.find(key);
  if (m == nullptr) return;
  if (m->type != GgufValueType::ARRAY ||
      (m->elem_type != GgufValueType::U8 && m->elem_type != GgufValueType::I8)) {
    invalid(f, key, "expected an array of u8 or i8");
  }
  v.precompiled_charsmap.reserve(m->arr.size());
  for (const GgufValue& b : m->arr) {
    v.precompiled_charsmap.push_back(uint8_t(m->elem_type == GgufValueType::U8 ? b.u : b.i));
  }
}

VocabData read_vocab(const GgufFile& f) {
  VocabData v;
  v.source = f.name();
  std::optional<std::string> model = f.get_string_opt("tokenizer.ggml.model");
  if (!model) invalid(f, "tokenizer.ggml.model", "missing");
  v.model = *model;
  v.pre = f.get_string_opt("tokenizer.ggml.pre").value_or("");
  v.general_name = f.get_string_opt("general.name").value_or("");
  read_tokens(f, v);
  const size_t n = v.tokens.size();
  v.bos = token_id(f, "tokenizer.ggml.bos_token_id", n);
  v.eos = token_id(f, "tokenizer.ggml.eos_token_id", n);
  v.unk = token_id(f, "tokenizer.ggml.unknown_token_id", n);
  v.eot = token_id(f, "tokenizer.ggml.eot_token_id", n);
  v.eom = token_id(f, "tokenizer.ggml.eom_token_id", n);
  v.sep = token_id(f, "tokenizer.ggml.seperator_token_id", n);  // sic, as llama.cpp spells it
  v.add_bos = f.get_bool_opt("tokenizer.ggml.add_bos_token");
  v.add_eos = f.get_bool_opt("tokenizer.ggml.add_eos_token");
  v.add_sep = f.get_bool_opt("tokenizer.ggml.add_sep_token");
  v.add_space_prefix = f.get_bool_opt("tokenizer.ggml.add_space_prefix");
  v.remove_extra_whitespaces = f.get_bool_opt("tokenizer.ggml.remove_extra_whitespaces");
  read_charsmap(f, v);
  return v;
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GgufFile& f) {
  return tok::from_vocab(read_vocab(f));
}

std::string Tokenizer::decode(const std::vector<TokenId>& ids) const {
  std::string out;
  for (TokenId id : ids) out += piece(id);
  return out;
}

bool Tokenizer::is_end_of_generation(TokenId id) const {
  return std::find(end_ids_.begin(), end_ids_.end(), id) != end_ids_.end();
}

}  // namespace galleon
