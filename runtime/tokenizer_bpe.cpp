// "gpt2" vocabularies: byte-level BPE with ranked merges after a regex pre-tokenizer, as
// llama.cpp's llm_tokenizer_bpe does it. Behaviour: docs/tokenizers.md.
#include <queue>
#include <unordered_map>

#include "runtime/error.h"
#include "runtime/tokenizer_internal.h"
#include "runtime/unicode.h"

namespace galleon::tok {

namespace {

// The regexes of llama.cpp's pre-tokenizers (llama-vocab.cpp), applied in turn.
constexpr const char* kGpt2 =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
constexpr const char* kLlama3 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kDeepseekLetters =
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-"
    "ὗὙὛὝὟ-\\x{1F7D}ᾀ-ᾴᾶ-ᾼ\\x{1FBE}ῂ-ῄῆ-ῌῐ-\\x{1FD3}ῖ-\\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\\x{2126}ℨ\\x{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-"
    "ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+";
constexpr const char* kCjk = "[一-龥ࠀ-一가-퟿]+";
// Letters split at case changes (Mistral's tekken, GPT-4o): an upper-case run then lower case.
constexpr const char* kTekken =
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|"
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kGpt4o =
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+"
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|"
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*"
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kSeedCoder =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kBailing =
    "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+";
// DeepSeek-V3: ASCII punctuation before ASCII letters, letters with their marks.
constexpr const char* kDeepseek3 =
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|"
    "[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";

struct PreSpec {
  std::vector<const char*> names;
  std::vector<const char*> regexes;
  bool ignore_merges = false;
  bool add_bos = false;
};

const std::vector<PreSpec>& pre_specs() {
  static const std::vector<PreSpec> specs = {
      {{"", "default"},
       {"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2, "\\p{N}+", "[0-9][0-9][0-9]"}},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"},
       {kLlama3}, true, true},
      {{"dbrx", "smaug-bpe"}, {kLlama3}},
      {{"deepseek-llm"},
       {"[\r\n]", kDeepseekLetters, "\\s?[!-/:-~！-／：-～‘-‟　-。]+", "\\s+$", kCjk, "\\p{N}+"}},
      {{"deepseek-coder"}, {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", kCjk, "\\p{N}"}},
      {{"falcon"}, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", kGpt2, "[0-9][0-9][0-9]"}},
      {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"},
       {"\\p{N}", kGpt2}},
      {{"gpt-2", "phi-2", "mpt", "olmo", "jais", "jina-es", "jina-de", "gigachat", "jina-v2-es",
        "jina-v2-de", "a.x-4.0", "mellum", "exaone4", "trillion", "granite-docling", "roberta-bpe",
        "jina-v1-en", "jina-v2-code"},
       {kGpt2}},
      {{"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez", "hunyuan", "grok-2", "kormo"},
       {kQwen2}},
      {{"tekken"}, {kTekken}, true, true},
      {{"gpt-4o", "llama4", "minimax-m2"}, {kGpt4o}},
      {{"deepseek-v3", "hunyuan-dense"}, {"\\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+", kDeepseek3}},
      {{"chatglm-bpe", "glm4"}, {kLlama3}},
      {{"seed-coder"}, {kSeedCoder}},
      {{"bailingmoe", "bailingmoe2", "llada-moe"}, {kBailing}},
      {{"chameleon"},
       {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
        "[\\p{P}!-/:-@\\[-`{-~]", kGpt2},
       false, true},
      {{"poro-chat", "bloom", "gpt3-finnish"}, {" ?[^(\\s|.,!?…。，、।۔،)]+"}},
      {{"viking"}, {" ?[^(\\s|.,!?…。，、।۔،)]+", "\\p{N}"}},
  };
  return specs;
}

}  // namespace

std::optional<PreTokenizer> make_pre_tokenizer(std::string_view pre) {
  for (const PreSpec& spec : pre_specs()) {
    for (const char* name : spec.names) {
      if (pre != name) continue;
      PreTokenizer p;
      for (const char* re : spec.regexes) p.regexes.emplace_back(re);
      p.ignore_merges = spec.ignore_merges;
      p.add_bos_default = spec.add_bos;
      return p;
    }
  }
  return std::nullopt;
}

std::vector<std::string> pre_tokenize(const PreTokenizer& p, std::string_view text) {
  const std::vector<uint32_t> cpts = unicode::decode_utf8_lossy(text);
  // llama.cpp matches non-ASCII whitespace as U+000B (its \s handling); the pieces keep the
  // original code points.
  std::vector<uint32_t> subject = cpts;
  for (uint32_t& c : subject) {
    if (c > 0x7F && unicode::is_whitespace(c)) c = 0x0B;
  }
  std::vector<size_t> lengths = {cpts.size()};
  for (const regex::Regex& re : p.regexes) {
    std::vector<size_t> next;
    size_t start = 0;
    for (size_t len : lengths) {
      re.split(subject.data() + start, len, next);
      start += len;
    }
    lengths = std::move(next);
  }
  std::vector<std::string> words;
  words.reserve(lengths.size());
  size_t start = 0;
  for (size_t len : lengths) {
    std::string w;
    for (size_t i = start; i < start + len; ++i) unicode::append_utf8(w, cpts[i]);
    words.push_back(std::move(w));
    start += len;
  }
  return words;
}

namespace {

class BpeTokenizer final : public VocabTokenizer {
 public:
  BpeTokenizer(const VocabData& v, PreTokenizer pre) : VocabTokenizer(v), pre_(std::move(pre)) {
    add_bos_ = v.add_bos.value_or(pre_.add_bos_default);
    ranks_.reserve(v.merges.size() * 2);
    for (size_t i = 0; i < v.merges.size(); ++i) {
      const std::string& m = v.merges[i];
      size_t sp = m.find(' ', 1);
      if (sp == std::string::npos) continue;
      ranks_.emplace(merge_key(std::string_view(m).substr(0, sp),
                               std::string_view(m).substr(sp + 1)),
                     int32_t(i));  // the first occurrence wins
    }
  }

 protected:
  void encode_text(std::string_view text, bool after_special,
                   std::vector<TokenId>& out) const override;
  std::string normal_piece(const std::string& text) const override;
  std::string byte_piece(TokenId) const override { return ""; }  // as llama.cpp

 private:
  struct Symbol {
    size_t offset;
    size_t length;
    int prev;
    int next;
  };
  struct Bigram {
    int32_t rank;
    int left;
    int right;
    size_t length;
  };
  struct BigramOrder {  // lowest rank first, then leftmost
    bool operator()(const Bigram& a, const Bigram& b) const {
      return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
    }
  };
  using Queue = std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder>;

  static std::string merge_key(std::string_view a, std::string_view b) {
    std::string k;
    k.reserve(a.size() + b.size() + 1);
    k.append(a).push_back(' ');
    k.append(b);
    return k;
  }
  void try_bigram(std::string_view w, const std::vector<Symbol>& syms, int left, int right,
                  Queue& q, std::string& key) const;
  void encode_word(std::string_view w, std::vector<TokenId>& out) const;
  void emit_symbol(std::string_view s, std::vector<TokenId>& out) const;

  PreTokenizer pre_;
  std::unordered_map<std::string, int32_t> ranks_;
};

void BpeTokenizer::try_bigram(std::string_view w, const std::vector<Symbol>& syms, int left,
                              int right, Queue& q, std::string& key) const {
  if (left < 0 || right < 0) return;
  const Symbol& l = syms[size_t(left)];
  const Symbol& r = syms[size_t(right)];
  key.assign(w.substr(l.offset, l.length)).push_back(' ');
  key.append(w.substr(r.offset, r.length));
  auto it = ranks_.find(key);
  if (it == ranks_.end()) return;
  q.push({it->second, left, right, l.length + r.length});
}

void BpeTokenizer::emit_symbol(std::string_view s, std::vector<TokenId>& out) const {
  TokenId id = find_token(s);
  if (id >= 0) { out.push_back(id); return; }
  for (char c : s) {  // llama.cpp: each byte that is itself a token
    TokenId b = find_token(std::string_view(&c, 1));
    if (b >= 0) out.push_back(b);
  }
}

void BpeTokenizer::encode_word(std::string_view w, std::vector<TokenId>& out) const {
  if (pre_.ignore_merges) {
    if (TokenId id = find_token(w); id >= 0) { out.push_back(id); return; }
  }
  std::vector<Symbol> syms;
  for (size_t off = 0; off < w.size();) {
    size_t len = std::min(unicode::utf8_len(uint8_t(w[off])), w.size() - off);
    int idx = int(syms.size());
    syms.push_back({off, len, idx - 1, off + len == w.size() ? -1 : idx + 1});
    off += len;
  }
  Queue q;
  std::string key;
  for (int i = 1; i < int(syms.size()); ++i) try_bigram(w, syms, i - 1, i, q, key);
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
    try_bigram(w, syms, l.prev, b.left, q, key);
    try_bigram(w, syms, b.left, l.next, q, key);
  }
  for (const Symbol& s : syms) {
    if (s.length > 0) emit_symbol(w.substr(s.offset, s.length), out);
  }
}

void BpeTokenizer::encode_text(std::string_view text, bool, std::vector<TokenId>& out) const {
  for (const std::string& word : pre_tokenize(pre_, text)) {
    std::string mapped;
    mapped.reserve(word.size() * 2);
    for (char c : word) unicode::append_utf8(mapped, unicode::byte_to_cpt(uint8_t(c)));
    encode_word(mapped, out);
  }
}

std::string BpeTokenizer::normal_piece(const std::string& text) const {
  std::string out;
  for (uint32_t c : unicode::decode_utf8_lossy(text)) {
    int b = unicode::cpt_to_byte(c);
    if (b >= 0) out.push_back(char(b));
    else unicode::append_utf8(out, c);  // outside the byte alphabet: kept as text
  }
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> make_bpe(const VocabData& v) {
  std::optional<PreTokenizer> pre = make_pre_tokenizer(v.pre);
  if (!pre) {
    fail(ErrorKind::Unsupported,
         v.source + ": tokenizer.ggml.pre '" + v.pre + "' is not a supported pre-tokenizer");
  }
  return std::make_unique<BpeTokenizer>(v, std::move(*pre));
}

}  // namespace galleon::tok
