// "t5" vocabularies: SentencePiece unigram (UGM), as llama.cpp's llm_tokenizer_ugm does it: the
// text normalized by the vocabulary's precompiled character map, spaces escaped, then the
// segmentation of the highest total score (Viterbi). Behaviour: docs/tokenizers.md.
#include <cfloat>
#include <cstring>

#include "runtime/error.h"
#include "runtime/tokenizer_internal.h"
#include "runtime/unicode.h"

namespace galleon::tok {

namespace {

// tokenizer.ggml.precompiled_charsmap: a u32 (little-endian) byte count, that many bytes of
// XOR-compressed compact double array (XCDA) entries, then NUL-terminated replacement strings.
// Every field is hostile: each entry read is bounds-checked, a replacement must end inside the
// strings.
class Charsmap {
 public:
  Charsmap() = default;
  Charsmap(const std::vector<uint8_t>& blob, std::string source) : source_(std::move(source)) {
    if (blob.empty()) return;  // no map: the text is kept as is
    uint32_t array_bytes = 0;
    if (blob.size() >= 4) std::memcpy(&array_bytes, blob.data(), 4);
    if (blob.size() < 4 || uint64_t(array_bytes) + 4 >= blob.size()) {
      fail(ErrorKind::Invalid, source_ + ": tokenizer.ggml.precompiled_charsmap: " +
                                   std::to_string(blob.size()) +
                                   " bytes cannot hold its array size, array and strings");
    }
    entries_.resize(array_bytes / 4);
    std::memcpy(entries_.data(), blob.data() + 4, entries_.size() * 4);  // little-endian hosts
    strings_.assign(blob.begin() + 4 + array_bytes, blob.end());
  }

  // The longest prefix of s the map replaces: {replacement, bytes consumed}, or consumed 0.
  std::pair<std::string_view, size_t> match(std::string_view s) const {
    if (entries_.empty()) return {{}, 0};
    size_t best_len = 0;
    uint32_t best_at = 0;
    uint32_t node = base(0);
    for (size_t i = 0; i < s.size() && s[i] != 0; ++i) {
      const uint8_t c = uint8_t(s[i]);
      node ^= c;
      if (lcheck(node) != c) break;  // not a child of the node before
      const bool leaf = at(node) >> 8 & 1;
      node ^= base(node);
      if (leaf) {
        best_len = i + 1;
        best_at = at(node) & 0x7FFFFFFFu;  // the replacement's offset in the strings
      }
    }
    if (best_len == 0) return {{}, 0};
    return {replacement(best_at), best_len};
  }

 private:
  uint32_t at(uint32_t index) const {
    if (index >= entries_.size()) {
      fail(ErrorKind::Invalid, source_ + ": tokenizer.ggml.precompiled_charsmap: entry " +
                                   std::to_string(index) + " outside its " +
                                   std::to_string(entries_.size()) + " entries");
    }
    return entries_[index];
  }
  uint32_t base(uint32_t index) const {
    const uint32_t e = at(index);
    return (e >> 10) << ((e & (1u << 9)) >> 6);
  }
  uint32_t lcheck(uint32_t index) const { return at(index) & ((1u << 31) | 0xFFu); }
  std::string_view replacement(uint32_t offset) const {
    const void* nul = offset < strings_.size()
                          ? std::memchr(strings_.data() + offset, 0, strings_.size() - offset)
                          : nullptr;
    if (nul == nullptr) {
      fail(ErrorKind::Invalid, source_ + ": tokenizer.ggml.precompiled_charsmap: replacement at " +
                                   std::to_string(offset) + " does not end inside its " +
                                   std::to_string(strings_.size()) + " bytes of strings");
    }
    const size_t end = size_t(static_cast<const char*>(nul) - strings_.data());
    return {strings_.data() + offset, end - offset};
  }

  std::string source_;
  std::vector<uint32_t> entries_;
  std::string strings_;
};

class UgmTokenizer final : public VocabTokenizer {
 public:
  explicit UgmTokenizer(const VocabData& v)
      : VocabTokenizer(v), charsmap_(v.precompiled_charsmap, v.source) {
    bos_ = v.bos.value_or(-1);  // llama.cpp's defaults for t5 vocabularies: no BOS, </s>, <unk>
    eos_ = id_or_default(v.eos, 1);
    unk_ = id_or_default(v.unk, 2);
    if (!v.eos && eos_ >= 0) end_ids_.insert(end_ids_.begin(), eos_);
    add_bos_ = v.add_bos.value_or(false);
    add_eos_ = v.add_eos.value_or(true);
    add_space_prefix_ = v.add_space_prefix.value_or(false);
    merge_spaces_ = v.remove_extra_whitespaces.value_or(false);
    if (scores_.empty()) scores_.assign(tokens_.size(), 0.0f);
    std::vector<TokenId> matched, user;
    float min_score = FLT_MAX;
    for (size_t i = 0; i < tokens_.size(); ++i) {
      const TokenAttr a = attrs_[i];
      if (a == TokenAttr::Normal) min_score = std::min(min_score, scores_[i]);
      if (a == TokenAttr::Normal || a == TokenAttr::UserDefined || a == TokenAttr::Unused) {
        matched.push_back(TokenId(i));
      }
      if (a == TokenAttr::UserDefined) user.push_back(TokenId(i));
    }
    unknown_score_ = min_score - 10.0f;  // float, as llama.cpp computes it
    tokens_matcher_ = PrefixMatcher(tokens_, matched);
    user_matcher_ = PrefixMatcher(tokens_, user);
  }

 protected:
  void encode_text(std::string_view text, bool, std::vector<TokenId>& out) const override {
    best_segmentation(normalize(text), out);
  }

 private:
  // One step of the normalization at s: the longest start of a user-defined token as is (a
  // start, not only a whole token, as llama.cpp's trie answers), else the character map's
  // longest replacement, else one valid UTF-8 sequence as is, else U+FFFD for one byte.
  std::pair<std::string_view, size_t> normalize_prefix(std::string_view s) const {
    if (const size_t len = user_matcher_.shared_prefix(s); len > 0) return {s.substr(0, len), len};
    if (auto m = charsmap_.match(s); m.second > 0) return m;
    if (const size_t len = unicode::utf8_valid_len(s, 0); len > 0) return {s.substr(0, len), len};
    return {"\xEF\xBF\xBD", 1};
  }

  // The text normalized, with each space as kSpaceMark: one in front of the first non-space
  // (add_space_prefix), or, with remove_extra_whitespaces, one in front of every run of
  // non-spaces and no others.
  std::string normalize(std::string_view text) const {
    std::string out;
    out.reserve(text.size() * 3);
    bool prepended = false, in_word = false;
    for (size_t at = 0; at < text.size();) {
      const auto [piece, consumed] = normalize_prefix(text.substr(at));
      for (char c : piece) {
        if (c != ' ') {
          if (!in_word) {
            in_word = true;
            if ((add_space_prefix_ && !prepended) || merge_spaces_) {
              out += kSpaceMark;
              prepended = true;
            }
          }
          out += c;
        } else {
          in_word = false;
          if (!merge_spaces_) out += kSpaceMark;
        }
      }
      at += consumed;
    }
    return out;
  }

  // Viterbi over code-point boundaries: the best (highest summed score, the first found on a
  // tie) tokenization of each prefix; a code point no token covers alone may be the unknown
  // token at min score - 10; consecutive unknowns become one.
  void best_segmentation(const std::string& s, std::vector<TokenId>& out) const {
    if (s.empty()) return;
    struct Best {
      TokenId id;
      size_t from;
      double score;
    };
    std::vector<Best> best(s.size() + 1, Best{unk_, 0, -DBL_MAX});
    best[0] = {unk_, 0, 0.0};
    for (size_t at = 0; at < s.size();) {
      const size_t cp_len = std::min(unicode::utf8_len(uint8_t(s[at])), s.size() - at);
      const double here = best[at].score;
      bool covered = false;
      tokens_matcher_.for_each_prefix(std::string_view(s).substr(at), [&](size_t len, TokenId id) {
        covered |= len == cp_len;
        const bool user = attrs_[size_t(id)] == TokenAttr::UserDefined;
        const double score = here + (user ? 0.0 : double(scores_[size_t(id)]));
        if (score > best[at + len].score) best[at + len] = {id, at, score};
      });
      if (!covered && here + double(unknown_score_) > best[at + cp_len].score) {
        best[at + cp_len] = {unk_, at, here + double(unknown_score_)};
      }
      at += cp_len;
    }
    std::vector<TokenId> reversed;
    bool prev_unknown = false;
    for (size_t at = s.size();;) {
      const Best& b = best[at];
      const bool unknown = b.id == unk_;
      if (!(prev_unknown && unknown) && b.id >= 0) reversed.push_back(b.id);
      if (b.from == 0) break;
      at = b.from;
      prev_unknown = unknown;
    }
    out.insert(out.end(), reversed.rbegin(), reversed.rend());
  }

  Charsmap charsmap_;
  PrefixMatcher tokens_matcher_;  // normal, user-defined and unused tokens
  PrefixMatcher user_matcher_;    // user-defined tokens
  float unknown_score_ = 0;
  bool add_space_prefix_ = false;
  bool merge_spaces_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer> make_ugm(const VocabData& v) {
  return std::make_unique<UgmTokenizer>(v);
}

}  // namespace galleon::tok
