// "llama" vocabularies: SentencePiece-style BPE over scores with byte fallback, as llama.cpp's
// llm_tokenizer_spm does it. Behaviour: docs/tokenizers.md.
#include <queue>

#include "runtime/error.h"
#include "runtime/tokenizer_internal.h"
#include "runtime/unicode.h"

namespace galleon::tok {

namespace {

class SpmTokenizer final : public VocabTokenizer {
 public:
  explicit SpmTokenizer(const VocabData& v) : VocabTokenizer(v) {
    bos_ = id_or_default(v.bos, 1);  // llama.cpp's defaults for llama vocabularies
    eos_ = id_or_default(v.eos, 2);
    unk_ = id_or_default(v.unk, 0);
    if (!v.eos && eos_ >= 0) end_ids_.insert(end_ids_.begin(), eos_);
    add_bos_ = v.add_bos.value_or(true);
    add_space_prefix_ = v.add_space_prefix.value_or(true);
    if (scores_.empty()) scores_.assign(size_t(n_vocab()), 0.0f);
    init_byte_tokens();
  }

 protected:
  void encode_text(std::string_view text, bool after_special,
                   std::vector<TokenId>& out) const override;

 private:
  struct Symbol {
    size_t offset;
    size_t length;  // 0 once merged into its left neighbour
    int prev;
    int next;
  };
  struct Bigram {
    float score;
    int left;
    int right;
    size_t length;
  };
  struct BigramOrder {  // highest score first, then leftmost
    bool operator()(const Bigram& a, const Bigram& b) const {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };
  using Queue = std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder>;

  void init_byte_tokens();
  void try_bigram(const std::string& s, const std::vector<Symbol>& syms, int left, int right,
                  Queue& q) const;
  void emit_symbol(std::string_view text, std::vector<TokenId>& out) const;

  bool add_space_prefix_ = true;
  TokenId byte_tokens_[256];
};

void SpmTokenizer::init_byte_tokens() {
  static const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    char name[7] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0};
    TokenId id = find_token(name);
    if (id < 0) id = find_token(std::string(1, char(b)));
    byte_tokens_[b] = id >= 0 ? id : unk_;
  }
}

void SpmTokenizer::try_bigram(const std::string& s, const std::vector<Symbol>& syms, int left,
                              int right, Queue& q) const {
  if (left < 0 || right < 0) return;
  size_t len = syms[size_t(left)].length + syms[size_t(right)].length;
  TokenId id = find_token(std::string_view(s).substr(syms[size_t(left)].offset, len));
  if (id < 0) return;
  q.push({scores_[size_t(id)], left, right, len});
}

void SpmTokenizer::emit_symbol(std::string_view text, std::vector<TokenId>& out) const {
  TokenId id = find_token(text);
  if (id >= 0) { out.push_back(id); return; }
  for (char c : text) {  // byte fallback
    TokenId b = byte_tokens_[static_cast<unsigned char>(c)];
    if (b >= 0) out.push_back(b);
  }
}

void SpmTokenizer::encode_text(std::string_view text, bool after_special,
                               std::vector<TokenId>& out) const {
  std::string s;
  s.reserve(text.size() * 2 + 3);
  if (add_space_prefix_ && after_special) s += kSpaceMark;
  for (char c : text) {
    if (c == ' ') s += kSpaceMark;
    else s.push_back(c);
  }
  std::vector<Symbol> syms;
  for (size_t off = 0; off < s.size();) {
    size_t len = std::min(unicode::utf8_len(uint8_t(s[off])), s.size() - off);
    int idx = int(syms.size());
    syms.push_back({off, len, idx - 1, off + len == s.size() ? -1 : idx + 1});
    off += len;
  }
  Queue q;
  for (int i = 1; i < int(syms.size()); ++i) try_bigram(s, syms, i - 1, i, q);
  while (!q.empty()) {
    Bigram b = q.top();
    q.pop();
    Symbol& l = syms[size_t(b.left)];
    Symbol& r = syms[size_t(b.right)];
    if (l.length == 0 || r.length == 0 || l.length + r.length != b.length) continue;  // stale
    l.length += r.length;
    r.length = 0;
    l.next = r.next;
    if (r.next >= 0) syms[size_t(r.next)].prev = b.left;
    try_bigram(s, syms, l.prev, b.left, q);
    try_bigram(s, syms, b.left, l.next, q);
  }
  for (int i = syms.empty() ? -1 : 0; i != -1; i = syms[size_t(i)].next) {
    emit_symbol(std::string_view(s).substr(syms[size_t(i)].offset, syms[size_t(i)].length), out);
  }
}

}  // namespace

std::unique_ptr<Tokenizer> make_spm(const VocabData& v) {
  return std::make_unique<SpmTokenizer>(v);
}

}  // namespace galleon::tok
