// Internals shared by tokenizer.cpp and the models' tokenizer_*.cpp (and the tests).
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/tokenizer.h"
#include "runtime/unicode_regex.h"

namespace galleon::tok {

// The tokenizer.ggml.* metadata a tokenizer is built from, already validated for shape.
struct VocabData {
  std::string source;        // file name, for messages
  std::string model;         // tokenizer.ggml.model
  std::string pre;           // tokenizer.ggml.pre ("" when absent)
  std::string general_name;  // general.name (llama.cpp keys a phi-3 quirk on it)
  std::vector<std::string> tokens;
  std::vector<float> scores;       // empty or one per token
  std::vector<TokenAttr> attrs;    // one per token
  std::vector<std::string> merges; // "left right"
  std::optional<TokenId> bos, eos, unk, eot, eom, sep;
  std::optional<bool> add_bos, add_eos, add_sep, add_space_prefix, remove_extra_whitespaces;
  std::vector<uint8_t> precompiled_charsmap;  // t5: tokenizer.ggml.precompiled_charsmap
};

// U+2581, the space of SentencePiece vocabularies and the word start of WordPiece ones.
constexpr std::string_view kSpaceMark = "\xE2\x96\x81";

// A set of tokens sorted by text, for the tokens a string starts with: the string is matched one
// byte at a time against the range of tokens sharing its first bytes, so the work is bounded by
// the longest match tried, never by the vocabulary's longest token (a hostile field). Views into
// the tokenizer's token texts, like VocabTokenizer's id map.
class PrefixMatcher {
 public:
  PrefixMatcher() = default;
  PrefixMatcher(const std::vector<std::string>& tokens, const std::vector<TokenId>& ids);

  // Calls f(length, id) for each token that s starts with, shortest first. Of several tokens
  // with the same text, the highest id (llama.cpp's maps keep the last one inserted).
  template <class F>
  void for_each_prefix(std::string_view s, F&& f) const {
    Range r{sorted_.begin(), sorted_.end()};
    for (size_t d = 0; d < s.size() && narrow(r, d, uint8_t(s[d])); ++d) {
      // Tokens of exactly d + 1 bytes sort first in the range, their ids ascending.
      auto end = std::partition_point(r.lo, r.hi,
                                      [&](const Entry& e) { return e.text.size() == d + 1; });
      if (end != r.lo) f(d + 1, std::prev(end)->id);
    }
  }
  // How many leading bytes of s some token starts with (a token's prefix, not necessarily a
  // whole token: llama.cpp's naive_trie::get_longest_prefix).
  size_t shared_prefix(std::string_view s) const {
    Range r{sorted_.begin(), sorted_.end()};
    size_t d = 0;
    while (d < s.size() && narrow(r, d, uint8_t(s[d]))) ++d;
    return d;
  }
  // The longest token s starts with: {length, id}, or {0, -1}.
  std::pair<size_t, TokenId> longest(std::string_view s) const {
    std::pair<size_t, TokenId> best{0, -1};
    for_each_prefix(s, [&](size_t len, TokenId id) { best = {len, id}; });
    return best;
  }

 private:
  struct Entry {
    std::string_view text;
    TokenId id;
  };
  using It = std::vector<Entry>::const_iterator;
  struct Range {
    It lo, hi;
  };
  // r, the entries sharing d bytes, narrowed to those whose byte d is c; false when none are.
  static bool narrow(Range& r, size_t d, uint8_t c) {
    auto byte_at = [d](const Entry& e) {
      return d < e.text.size() ? int(uint8_t(e.text[d])) : -1;  // shorter texts sort first
    };
    r.lo = std::partition_point(r.lo, r.hi, [&](const Entry& e) { return byte_at(e) < c; });
    r.hi = std::partition_point(r.lo, r.hi, [&](const Entry& e) { return byte_at(e) == c; });
    return r.lo != r.hi;
  }
  std::vector<Entry> sorted_;  // by text (bytes, unsigned), then id
};

// The part of encoding common to both models: special-token partitioning, BOS/EOS, pieces.
class VocabTokenizer : public Tokenizer {
 public:
  std::vector<TokenId> encode(std::string_view text, bool add_bos,
                              bool parse_special) const override;
  std::string piece(TokenId id) const override;
  TokenId find_token(std::string_view text) const;  // -1 when absent

  // A piece of input: raw text [offset, offset + length) or a special token.
  struct Fragment {
    TokenId token = -1;  // -1: raw text
    size_t offset = 0;
    size_t length = 0;
  };
  // llama.cpp's tokenizer_st_partition: special tokens, longest first, split the text.
  std::vector<Fragment> partition(std::string_view text, bool parse_special) const;

 protected:
  explicit VocabTokenizer(const VocabData& v);
  // Tokenizes raw text; `after_special` is true at the start and right after a special token.
  virtual void encode_text(std::string_view text, bool after_special,
                           std::vector<TokenId>& out) const = 0;
  // Bytes of a normal token's text, and of a byte token. By default SentencePiece's conventions
  // (llama, bert, t5 vocabularies): kSpaceMark is a space; "<0xXX>" is the byte XX, a byte token
  // named otherwise its text.
  virtual std::string normal_piece(const std::string& text) const;
  virtual std::string byte_piece(TokenId id) const;

  // The metadata's id, else llama.cpp's default for the model where the vocabulary has it.
  TokenId id_or_default(std::optional<TokenId> id, TokenId def) const {
    return id ? *id : (def < n_vocab() ? def : -1);
  }

  std::vector<float> scores_;
  TokenId unk_ = -1;
  bool add_eos_ = false;

 private:
  void build_specials(const VocabData& v);
  std::vector<Fragment> split_on(std::string_view text, const std::vector<Fragment>& in,
                                 TokenId special) const;

  std::unordered_map<std::string_view, TokenId> ids_;  // views into tokens_
  std::vector<TokenId> specials_;  // control, user-defined and unknown tokens, longest first
  std::vector<uint8_t> lstrip_, rstrip_;  // per token (llama.cpp token attributes)
};

std::unique_ptr<Tokenizer> make_spm(const VocabData& v);
std::unique_ptr<Tokenizer> make_bpe(const VocabData& v);
std::unique_ptr<Tokenizer> make_wpm(const VocabData& v);
std::unique_ptr<Tokenizer> make_ugm(const VocabData& v);
std::unique_ptr<Tokenizer> from_vocab(const VocabData& v);  // dispatches on v.model

// BPE pre-tokenizers (by tokenizer.ggml.pre).
struct PreTokenizer {
  std::vector<regex::Regex> regexes;
  bool ignore_merges = false;    // whole pieces that are tokens skip the merges (llama3)
  bool add_bos_default = false;
};
// nullopt for an unknown name. "" means "default".
std::optional<PreTokenizer> make_pre_tokenizer(std::string_view pre);
// Splits UTF-8 text into pre-tokenizer pieces (UTF-8, before the byte-level mapping), exactly
// as llama.cpp's unicode_regex_split: invalid UTF-8 becomes U+FFFD.
std::vector<std::string> pre_tokenize(const PreTokenizer& p, std::string_view text);

}  // namespace galleon::tok
