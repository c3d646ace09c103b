// "bert" vocabularies: WordPiece, as llama.cpp's llm_tokenizer_wpm does it (greedy longest
// match over words after BERT's basic preprocessing). Behaviour: docs/tokenizers.md.
#include <algorithm>

#include "runtime/tokenizer_internal.h"
#include "runtime/unicode.h"

namespace galleon::tok {

namespace {

// BERT's CJK ideograph blocks, as llama.cpp (and Hugging Face) list them.
bool is_chinese_char(uint32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// \p{C} as llama.cpp's tables have it: unassigned code points are "other" too.
bool is_other(uint32_t c) {
  using unicode::UCat;
  const UCat cat = unicode::category(c);
  return cat == UCat::Cn || cat == UCat::Cc || cat == UCat::Cf || cat == UCat::Co ||
         cat == UCat::Cs;
}

// A code point that is a word of its own: punctuation, an ASCII symbol, a CJK ideograph.
bool stands_alone(uint32_t c) {
  using unicode::in_class;
  return in_class(c, unicode::kPunct) || (c < 0x7F && in_class(c, unicode::kSymbol)) ||
         is_chinese_char(c);
}

// BERT's basic tokenization: each code point replaced by the first of its NFD form (accents
// dropped); whitespace ends a word; NUL, U+FFFD and \p{C} are dropped; the rest lowercased, with
// punctuation, ASCII symbols and CJK ideographs as words of one code point.
std::vector<std::string> words_of(std::string_view text) {
  std::vector<std::string> words(1);
  auto end_word = [&] {
    if (!words.back().empty()) words.emplace_back();
  };
  for (uint32_t raw : unicode::decode_utf8_lossy(text)) {
    const uint32_t c = unicode::first_nfd(raw);
    if (unicode::is_whitespace(c)) { end_word(); continue; }
    if (c == 0 || c == 0xFFFD || is_other(c)) continue;
    const std::string s = unicode::to_utf8(unicode::first_lower(c));
    if (stands_alone(c)) {
      end_word();
      words.back() = s;
      words.emplace_back();
    } else {
      words.back() += s;
    }
  }
  if (words.back().empty()) words.pop_back();
  return words;
}

class WpmTokenizer final : public VocabTokenizer {
 public:
  explicit WpmTokenizer(const VocabData& v) : VocabTokenizer(v) {
    bos_ = id_or_default(v.bos, 101);  // llama.cpp's defaults for bert vocabularies: [CLS]
    unk_ = id_or_default(v.unk, 100);  // [UNK]
    sep_ = id_or_default(v.sep, 102);  // [SEP]
    add_bos_ = v.add_bos.value_or(true);
    add_sep_ = v.add_sep.value_or(true);
    std::vector<TokenId> all(tokens_.size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = TokenId(i);
    matcher_ = PrefixMatcher(tokens_, all);  // llama.cpp matches every token's text
  }

  // BERT's framing: [CLS] text [SEP] when add_bos asks for the special tokens.
  std::vector<TokenId> encode(std::string_view text, bool add_bos,
                              bool parse_special) const override {
    std::vector<TokenId> out = VocabTokenizer::encode(text, add_bos, parse_special);
    if (add_bos && add_sep_ && sep_ >= 0) out.push_back(sep_);
    return out;
  }

 protected:
  void encode_text(std::string_view text, bool, std::vector<TokenId>& out) const override {
    for (const std::string& w : words_of(text)) encode_word(std::string(kSpaceMark) + w, out);
  }
  std::string byte_piece(TokenId) const override { return ""; }  // WordPiece has no byte tokens

 private:
  // Greedy longest match from each byte position; a word with a position no token starts at
  // becomes [UNK] as a whole (nothing, where the vocabulary has no unknown token).
  void encode_word(std::string_view w, std::vector<TokenId>& out) const {
    const size_t start = out.size();
    for (size_t i = 0; i < w.size();) {
      const auto [len, id] = matcher_.longest(w.substr(i));
      if (len == 0) {
        out.resize(start);
        break;
      }
      out.push_back(id);
      i += len;
    }
    if (out.size() == start && unk_ >= 0) out.push_back(unk_);
  }

  TokenId sep_ = -1;
  bool add_sep_ = true;
  PrefixMatcher matcher_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_wpm(const VocabData& v) {
  return std::make_unique<WpmTokenizer>(v);
}

}  // namespace galleon::tok
