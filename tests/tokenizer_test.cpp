// Tokenizer tests: llama.cpp's test vectors for every vocabulary in shared/vocab, round trips,
// special tokens, metadata validation, the regex engine and the pre-tokenizers.
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <queue>
#include <sstream>

#include "runtime/error.h"
#include "runtime/gguf.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer_internal.h"
#include "runtime/unicode.h"
#include "runtime/unicode_regex.h"
#include "tests/test_support.h"

namespace galleon {
namespace {

using testing::shared_path;

std::unique_ptr<Tokenizer> load(const std::string& path, std::unique_ptr<GgufFile>* keep) {
  *keep = GgufFile::open(path);
  return Tokenizer::from_gguf(**keep);
}

// llama.cpp's test-tokenizer-0 layout: inputs each followed by "\n__ggml_vocab_test__\n".
std::vector<std::string> split_inputs(std::string text) {
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> out;
  for (size_t pos; (pos = text.find(sep)) != std::string::npos;) {
    out.push_back(text.substr(0, pos));
    text.erase(0, pos + sep.size());
  }
  return out;
}

std::vector<std::vector<TokenId>> parse_outputs(const std::string& text) {
  std::vector<std::vector<TokenId>> out;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::vector<TokenId> ids;
    for (long v; words >> v;) ids.push_back(TokenId(v));
    out.push_back(std::move(ids));
  }
  return out;
}

std::vector<std::string> vocab_files() {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(shared_path("vocab"))) {
    const std::string p = e.path().string();
    if (e.path().extension() == ".gguf" && std::filesystem::exists(p + ".inp") &&
        std::filesystem::exists(p + ".out")) {
      files.push_back(p);
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

TEST(Tokenizer, LlamaCppVectors) {
  GALLEON_REQUIRE_SHARED(shared_path("vocab"));
  const auto files = vocab_files();
  ASSERT_FALSE(files.empty());
  for (const std::string& path : files) {
    SCOPED_TRACE(path);
    std::unique_ptr<GgufFile> f;
    auto tok = load(path, &f);
    const auto inputs = split_inputs(testing::read_file(path + ".inp"));
    const auto expected = parse_outputs(testing::read_file(path + ".out"));
    ASSERT_EQ(inputs.size(), expected.size());
    size_t failures = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      auto got = tok->encode(inputs[i], /*add_bos=*/false, /*parse_special=*/false);
      if (got != expected[i]) ++failures;
      EXPECT_EQ(got, expected[i]) << "input " << i << ": '" << inputs[i] << "'";
    }
    EXPECT_EQ(failures, 0u) << "of " << inputs.size() << " vectors";
  }
}

class SpmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = shared_path("vocab/ggml-vocab-llama-spm.gguf");
    GALLEON_REQUIRE_SHARED(path);
    tok_ = load(path, &file_);
  }
  std::unique_ptr<GgufFile> file_;
  std::unique_ptr<Tokenizer> tok_;
};

TEST_F(SpmTest, DecodeRoundTrips) {
  const std::vector<std::string> texts = {
      "Hello world", "  two leading spaces", "tabs\tand\nnewlines\n\n", "trailing  ",
      "Führer ½ naïve café", "нещо на Български", "我想在apple工作1314151天～", "🦙.cpp 😶‍🌫️ ✅",
      "<s> looks special but is text", "x", "1234567890 !@#$%^&*()"};
  for (const auto& t : texts) {
    auto ids = tok_->encode(t, false, false);
    EXPECT_EQ(tok_->decode(ids), " " + t) << t;  // the space prefix is kept by decode
  }
  EXPECT_TRUE(tok_->encode("", false, false).empty());
  EXPECT_EQ(tok_->encode("", true, false), std::vector<TokenId>{1});
}

TEST_F(SpmTest, Basics) {
  EXPECT_EQ(tok_->model_name(), "llama");
  EXPECT_EQ(tok_->n_vocab(), 32000);
  EXPECT_EQ(tok_->bos(), 1);
  EXPECT_EQ(tok_->eos(), 2);
  EXPECT_TRUE(tok_->add_bos_default());
  EXPECT_TRUE(tok_->is_end_of_generation(2));
  EXPECT_FALSE(tok_->is_end_of_generation(1));
  EXPECT_EQ(tok_->attr(1), TokenAttr::Control);
  EXPECT_EQ(tok_->piece(1), "");                // control
  EXPECT_EQ(tok_->piece(3 + 'A'), "A");         // <0x41>
  EXPECT_EQ(tok_->piece(15043), " Hello");
  EXPECT_THROW(tok_->piece(-1), Error);
  EXPECT_THROW(tok_->piece(32000), Error);
}

TEST_F(SpmTest, ParseSpecial) {
  const std::string text = "<s>Hello</s>";
  auto plain = tok_->encode(text, false, false);
  auto special = tok_->encode(text, false, true);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 1), 0);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 2), 0);
  // Special: "<s>", then "Hello" with the space prefix (it follows a special token), "</s>".
  EXPECT_EQ(special, (std::vector<TokenId>{1, 15043, 2}));
  EXPECT_EQ(tok_->encode("a<s>b", false, true), (std::vector<TokenId>{263, 1, 289}));
  // The space prefix applies only at the start and after a special token.
  auto with_bos = tok_->encode("Hello", true, false);
  EXPECT_EQ(with_bos, (std::vector<TokenId>{1, 15043}));
}

TEST(Tokenizer, Phi3UserDefinedTokensAlwaysMatch) {
  const std::string path = shared_path("vocab/ggml-vocab-phi-3.gguf");
  GALLEON_REQUIRE_SHARED(path);
  std::unique_ptr<GgufFile> f;
  auto tok = load(path, &f);
  // "</s>" is user-defined: matched without parse_special; llama.cpp's Phi-3 rule strips the
  // whitespace after it.
  auto ids = tok->encode("Hi</s>  there", false, false);
  ASSERT_GE(ids.size(), 3u);
  EXPECT_NE(std::find(ids.begin(), ids.end(), 2), ids.end());
  EXPECT_EQ(tok->encode("Hi</s>  there", false, false), tok->encode("Hi</s>there", false, false));
  // "<|user|>" is a control token: text unless parse_special.
  auto plain = tok->encode("<|user|>", false, false);
  EXPECT_EQ(std::find(plain.begin(), plain.end(), 32010), plain.end());
  EXPECT_EQ(tok->encode("<|user|>", false, true), std::vector<TokenId>{32010});
  EXPECT_TRUE(tok->is_end_of_generation(32000));  // eos
  EXPECT_TRUE(tok->is_end_of_generation(32007));  // "<|end|>", found by text as llama.cpp does
}

TEST(Tokenizer, Gpt2) {
  const std::string path = shared_path("vocab/ggml-vocab-gpt-2.gguf");
  GALLEON_REQUIRE_SHARED(path);
  std::unique_ptr<GgufFile> f;
  auto tok = load(path, &f);
  EXPECT_EQ(tok->model_name(), "gpt2");
  EXPECT_EQ(tok->pre_name(), "gpt-2");
  EXPECT_FALSE(tok->add_bos_default());
  EXPECT_EQ(tok->encode("Hello world", true, false), (std::vector<TokenId>{15496, 995}));
  auto plain = tok->encode("a<|endoftext|>", false, false);
  EXPECT_EQ(std::find(plain.begin(), plain.end(), 50256), plain.end());
  EXPECT_EQ(tok->encode("a<|endoftext|>", false, true), (std::vector<TokenId>{64, 50256}));
  for (std::string t : {"Hello, y'all! 🦙 \n\n  x", "  multiple   spaces ", "ünïcödé 123456"}) {
    EXPECT_EQ(tok->decode(tok->encode(t, false, false)), t);
  }
}

TEST(Tokenizer, Stories260K) {
  const std::string path = shared_path("models/stories260K/stories260K.gguf");
  GALLEON_REQUIRE_SHARED(path);
  std::unique_ptr<GgufFile> f;
  auto tok = load(path, &f);
  auto ids = tok->encode("Once upon a time", true, false);
  EXPECT_EQ(ids, (std::vector<TokenId>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok->decode(ids), " Once upon a time");
  EXPECT_EQ(tok->eos(), 2);
}

// Invalid UTF-8, NULs, special tokens' texts, long runs, random bytes: every id in range, and
// the ids decode.
void expect_hostile_text_handled(const Tokenizer& tok, const std::string& what) {
  std::vector<std::string> texts = {std::string("\xff\xfe\x80\xc3", 4), std::string("\0a\0", 3),
                                    "\xe2\x96", "\xf4\x90\x80\x80 \xed\xa0\x80 \xc0\x80",
                                    "<s><s></s><|endoftext|><unk>[CLS][UNK]",
                                    std::string(3000, ' '), std::string(3000, 'a')};
  uint32_t seed = 12345;
  for (int i = 0; i < 20; ++i) {
    std::string s;
    for (int k = 0; k < 200; ++k) {
      seed = seed * 1103515245u + 12345u;
      s.push_back(char(seed >> 16));
    }
    texts.push_back(s);
  }
  for (const auto& t : texts) {
    for (bool special : {false, true}) {
      auto ids = tok.encode(t, true, special);
      for (TokenId id : ids) ASSERT_TRUE(id >= 0 && id < tok.n_vocab()) << what;
      (void)tok.decode(ids);
    }
  }
}

TEST(Tokenizer, HostileTextNeverCrashes) {
  GALLEON_REQUIRE_SHARED(shared_path("vocab"));
  for (const std::string& path : vocab_files()) {
    std::unique_ptr<GgufFile> f;
    auto tok = load(path, &f);
    expect_hostile_text_handled(*tok, path);
  }
}

TEST(Tokenizer, HundredKilobytesIsFast) {
  GALLEON_REQUIRE_SHARED(shared_path("vocab"));
  std::string text;
  while (text.size() < 100000) {
    text += "The quick brown fox, it's 12345 jumps over Führer's naïve 🦙 dog! 我想在apple工作\n  ";
  }
  for (const std::string& path : vocab_files()) {
    std::unique_ptr<GgufFile> f;
    auto tok = load(path, &f);
    auto t0 = std::chrono::steady_clock::now();
    auto ids = tok->encode(text, true, true);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(s, 1.0) << path;
    EXPECT_GT(ids.size(), 10000u);
  }
}

// ---- metadata validation ----------------------------------------------------------------------

GgufValue strings(std::vector<std::string> v) {
  std::vector<GgufValue> e;
  for (auto& s : v) e.push_back(GgufValue::make_string(s));
  return GgufValue::make_array(GgufValueType::STRING, std::move(e));
}

GgufWriter small_vocab() {
  GgufWriter w;
  w.set("general.name", GgufValue::make_string("tiny"));
  w.set("tokenizer.ggml.model", GgufValue::make_string("llama"));
  w.set("tokenizer.ggml.tokens", strings({"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b"}));
  std::vector<GgufValue> scores, types;
  for (int i = 0; i < 6; ++i) {
    scores.push_back(GgufValue::make_f32(float(-i)));
    types.push_back(GgufValue::make_i32(i == 0 ? 2 : i < 3 ? 3 : 1));
  }
  w.set("tokenizer.ggml.scores", GgufValue::make_array(GgufValueType::F32, scores));
  w.set("tokenizer.ggml.token_type", GgufValue::make_array(GgufValueType::I32, types));
  return w;
}

// A tokenizer read from w's bytes in memory, kept with those bytes and the file over them.
struct Built {
  std::vector<uint8_t> bytes;
  std::unique_ptr<GgufFile> file;
  std::unique_ptr<Tokenizer> tok;
  const Tokenizer* operator->() const { return tok.get(); }
};

Built build(const GgufWriter& w) {
  Built b;
  b.bytes = w.to_bytes();
  b.file = GgufFile::from_memory(b.bytes.data(), b.bytes.size(), "mem.gguf");
  b.tok = Tokenizer::from_gguf(*b.file);
  return b;
}

void expect_error(const GgufWriter& w, ErrorKind kind, const std::string& needle) {
  try {
    build(w);
    ADD_FAILURE() << "no error; expected " << needle;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("mem.gguf"), std::string::npos) << e.what();
  }
}

TEST(TokenizerMetadata, SmallVocabWorks) {
  Built tok = build(small_vocab());
  EXPECT_EQ(tok->encode("ab", true, false), (std::vector<TokenId>{1, 3, 4, 5}));
  EXPECT_EQ(tok->encode("c", false, false), (std::vector<TokenId>{3, 0}));  // no bytes: unk
}

TEST(TokenizerMetadata, Errors) {
  GgufWriter w = small_vocab();
  w.set("tokenizer.ggml.scores", GgufValue::make_array(GgufValueType::F32,
                                                        {GgufValue::make_f32(0)}));
  expect_error(w, ErrorKind::Invalid, "tokenizer.ggml.scores");

  w = small_vocab();
  w.set("tokenizer.ggml.token_type",
        GgufValue::make_array(GgufValueType::I32, {GgufValue::make_i32(1)}));
  expect_error(w, ErrorKind::Invalid, "tokenizer.ggml.token_type");

  w = small_vocab();
  w.set("tokenizer.ggml.bos_token_id", GgufValue::make_u32(6));
  expect_error(w, ErrorKind::Invalid, "tokenizer.ggml.bos_token_id");

  w = small_vocab();
  w.set("tokenizer.ggml.eot_token_id", GgufValue::make_i32(-7));
  expect_error(w, ErrorKind::Invalid, "tokenizer.ggml.eot_token_id");

  GgufWriter no_tokens;
  no_tokens.set("tokenizer.ggml.model", GgufValue::make_string("llama"));
  expect_error(no_tokens, ErrorKind::Invalid, "tokenizer.ggml.tokens");

  w = small_vocab();
  w.set("tokenizer.ggml.model", GgufValue::make_string("wordpiece"));
  expect_error(w, ErrorKind::Unsupported, "wordpiece");

  w = small_vocab();
  w.set("tokenizer.ggml.model", GgufValue::make_string("gpt2"));
  w.set("tokenizer.ggml.pre", GgufValue::make_string("no-such-pre"));
  expect_error(w, ErrorKind::Unsupported, "no-such-pre");
}

TEST(TokenizerMetadata, NoneIdsAreAbsent) {
  GgufWriter w = small_vocab();
  w.set("tokenizer.ggml.padding_token_id", GgufValue::make_u32(0xFFFFFFFFu));
  w.set("tokenizer.ggml.eot_token_id", GgufValue::make_u32(0xFFFFFFFFu));
  w.set("tokenizer.ggml.add_bos_token", GgufValue::make_bool(false));
  Built tok = build(w);
  EXPECT_EQ(tok->encode("a", true, false), (std::vector<TokenId>{3, 4}));
}

// ---- WordPiece ("bert") ----------------------------------------------------------------------

// BERT's layout: [PAD], [unused0..98], [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, then pieces:
// "▁x" starts a word, "x" continues one (the converter's "##x").
GgufWriter bert_vocab() {
  std::vector<std::string> tokens = {"[PAD]"};
  for (int i = 0; i < 99; ++i) tokens.push_back("[unused" + std::to_string(i) + "]");
  for (const char* t : {"[UNK]", "[CLS]", "[SEP]", "[MASK]"}) tokens.push_back(t);
  const std::string sp = "\xE2\x96\x81";
  for (std::string t : {sp + "hello", sp + "world", sp + "un", std::string("aff"),
                        std::string("able"), sp + ",", sp + "!", sp + "cafe",
                        sp + "\xE4\xB8\xAD", sp + "$", std::string("s"), sp + "play",
                        std::string("ing"), sp + "ecole"}) {
    tokens.push_back(t);  // 104 ...
  }
  std::vector<GgufValue> types;
  for (size_t i = 0; i < tokens.size(); ++i) {
    types.push_back(GgufValue::make_i32(i == 100 ? 2 : i > 100 && i < 104 ? 3 : 1));
  }
  GgufWriter w;
  w.set("tokenizer.ggml.model", GgufValue::make_string("bert"));
  w.set("tokenizer.ggml.tokens", strings(tokens));
  w.set("tokenizer.ggml.token_type", GgufValue::make_array(GgufValueType::I32, types));
  return w;
}

TEST(Unicode, FirstCodePointOfNfdAndLowercase) {
  EXPECT_EQ(unicode::first_nfd(0xE9), 0x65u);      // é -> e + U+0301
  EXPECT_EQ(unicode::first_nfd(0xAC00), 0x1100u);  // Hangul syllable -> its leading jamo
  EXPECT_EQ(unicode::first_nfd(0x1E9B), 0x17Fu);   // ẛ -> ſ (canonical, not compatibility)
  EXPECT_EQ(unicode::first_nfd(0x41), 0x41u);
  EXPECT_EQ(unicode::first_nfd(0x10FFFF), 0x10FFFFu);
  EXPECT_EQ(unicode::first_lower(0x41), 0x61u);
  EXPECT_EQ(unicode::first_lower(0x3A3), 0x3C3u);  // Σ -> σ
  EXPECT_EQ(unicode::first_lower(0x130), 0x69u);   // İ -> i + U+0307
  EXPECT_EQ(unicode::first_lower(0x61), 0x61u);
  EXPECT_EQ(unicode::first_lower(0x10400), 0x10428u);  // Deseret
}

TEST(TokenizerWordPiece, BasicPreprocessingAndLongestMatch) {
  Built tok = build(bert_vocab());
  using V = std::vector<TokenId>;
  auto enc = [&](const std::string& s) { return tok->encode(s, false, false); };
  EXPECT_EQ(enc("Hello, World!"), (V{104, 109, 105, 110}));  // punctuation: words of its own
  EXPECT_EQ(enc("unaffable"), (V{106, 107, 108}));            // longest match, left to right
  EXPECT_EQ(enc("playings"), (V{115, 116, 114}));
  // The first code point of the NFD form, lowercased.
  EXPECT_EQ(enc("Caf\xC3\xA9 \xC3\x89" "COLE"), (V{111, 117}));
  // A combining mark typed as such stays in the word (llama.cpp), which then has no match.
  EXPECT_EQ(enc("Cafe\xCC\x81"), (V{100}));
  EXPECT_EQ(enc("\xE4\xB8\xAD$"), (V{112, 113}));  // CJK ideographs and ASCII symbols stand alone
  EXPECT_EQ(enc("xyz hello"), (V{100, 104}));   // a word without a match: [UNK] for all of it
  EXPECT_EQ(enc("hello\tworld\x01 \xE2\x80\x83"), (V{104, 105}));  // controls dropped
  EXPECT_EQ(enc("hello\xFFworld"), (V{100}));  // U+FFFD dropped without ending the word
  EXPECT_EQ(enc(""), V{});
  EXPECT_EQ(tok->encode("hello", true, false), (V{101, 104, 102}));  // [CLS] ... [SEP]
  EXPECT_EQ(tok->encode("[CLS] hello", false, true), (V{101, 104}));
  EXPECT_EQ(enc("[CLS] hello"), (V{100, 100, 100, 104}));  // "[", "cls", "]" as text
  EXPECT_EQ(tok->decode({104, 105, 109}), " hello world ,");
  EXPECT_EQ(tok->decode({106, 107, 108}), " unaffable");
  EXPECT_EQ(tok->bos(), 101);
  EXPECT_EQ(tok->model_name(), "bert");
  expect_hostile_text_handled(*tok.tok, "bert_vocab");
}

TEST(TokenizerWordPiece, MetadataOverridesTheDefaults) {
  GgufWriter w = bert_vocab();
  w.set("tokenizer.ggml.add_sep_token", GgufValue::make_bool(false));
  w.set("tokenizer.ggml.unknown_token_id", GgufValue::make_u32(0));
  Built tok = build(w);
  EXPECT_EQ(tok->encode("xyz hello", true, false), (std::vector<TokenId>{101, 0, 104}));
  w.set("tokenizer.ggml.seperator_token_id", GgufValue::make_u32(200));
  expect_error(w, ErrorKind::Invalid, "tokenizer.ggml.seperator_token_id");
}

// ---- Unigram ("t5") ---------------------------------------------------------------------------

// A precompiled charsmap as SentencePiece lays it out: a u32 byte count, XCDA entries, then the
// NUL-terminated replacements. A node at index i with base b has its children at (i ^ b) ^ c,
// each entry holding (b << 10) | leaf << 8 | c; a leaf's replacement offset sits at i ^ b with
// bit 31 set (so it never passes as a child).
std::vector<uint8_t> build_charsmap(const std::map<std::string, std::string>& map) {
  struct Node {
    std::map<uint8_t, size_t> kids;
    int64_t value = -1;
  };
  std::vector<Node> nodes(1);
  std::string strings;
  for (const auto& [from, to] : map) {
    size_t n = 0;
    for (char ch : from) {
      const uint8_t c = uint8_t(ch);
      if (!nodes[n].kids.count(c)) {
        nodes[n].kids[c] = nodes.size();
        nodes.emplace_back();
      }
      n = nodes[n].kids[c];
    }
    nodes[n].value = int64_t(strings.size());
    strings += to;
    strings.push_back('\0');
  }
  std::vector<uint32_t> entries(4096, 0);
  std::vector<bool> used(entries.size(), false);
  used[0] = true;
  std::queue<std::pair<size_t, uint32_t>> todo;  // node, its index
  todo.push({0, 0});
  while (!todo.empty()) {
    const auto [n, index] = todo.front();
    todo.pop();
    uint32_t p = 1;  // where the node's children and value go
    auto fits = [&](uint32_t q) {
      if (nodes[n].value >= 0 && used[q]) return false;
      for (const auto& kid : nodes[n].kids) {
        if ((q ^ kid.first) >= used.size() || used[q ^ kid.first]) return false;
      }
      return true;
    };
    while (!fits(p)) ++p;
    const uint32_t base = index ^ p;
    entries[index] = (base << 10) | (nodes[n].value >= 0 ? 1u << 8 : 0u) | (entries[index] & 0xFF);
    if (nodes[n].value >= 0) {
      used[p] = true;
      entries[p] = (1u << 31) | uint32_t(nodes[n].value);
    }
    for (const auto& [c, kid] : nodes[n].kids) {
      used[p ^ c] = true;
      entries[p ^ c] = c;
      todo.push({kid, p ^ c});
    }
  }
  const uint32_t bytes = uint32_t(entries.size() * 4);
  std::vector<uint8_t> blob(4 + bytes + strings.size());
  std::memcpy(blob.data(), &bytes, 4);
  std::memcpy(blob.data() + 4, entries.data(), bytes);
  std::memcpy(blob.data() + 4 + bytes, strings.data(), strings.size());
  return blob;
}

GgufValue byte_array(const std::vector<uint8_t>& blob) {
  std::vector<GgufValue> e;
  for (uint8_t b : blob) e.push_back(GgufValue::make_u8(b));
  return GgufValue::make_array(GgufValueType::U8, std::move(e));
}

// T5's settings (space prefix, extra whitespace removed) and a map of fullwidth A, the trade
// mark sign and tab.
GgufWriter t5_vocab(const std::string& extra_user_defined = "") {
  const std::string sp = "\xE2\x96\x81";
  std::vector<std::pair<std::string, float>> pieces = {
      {"<pad>", 0}, {"</s>", 0}, {"<unk>", 0}, {sp, -2}, {sp + "A", -1}, {"TM", -1.5},
      {sp + "he", -3}, {"llo", -3}, {sp + "hello", -5}, {"h", -4}, {"e", -4}, {"l", -4},
      {"o", -4}, {sp + "x", -2}, {"<sep>", 0}};
  if (!extra_user_defined.empty()) pieces.push_back({extra_user_defined, 0});
  std::vector<std::string> tokens;
  std::vector<GgufValue> scores, types;
  for (size_t i = 0; i < pieces.size(); ++i) {
    tokens.push_back(pieces[i].first);
    scores.push_back(GgufValue::make_f32(pieces[i].second));
    types.push_back(GgufValue::make_i32(i < 2 ? 3 : i == 2 ? 2 : i >= 14 ? 4 : 1));
  }
  GgufWriter w;
  w.set("tokenizer.ggml.model", GgufValue::make_string("t5"));
  w.set("tokenizer.ggml.tokens", strings(tokens));
  w.set("tokenizer.ggml.scores", GgufValue::make_array(GgufValueType::F32, scores));
  w.set("tokenizer.ggml.token_type", GgufValue::make_array(GgufValueType::I32, types));
  w.set("tokenizer.ggml.add_space_prefix", GgufValue::make_bool(true));
  w.set("tokenizer.ggml.remove_extra_whitespaces", GgufValue::make_bool(true));
  w.set("tokenizer.ggml.precompiled_charsmap",
        byte_array(build_charsmap({{"\xEF\xBC\xA1", "A"}, {"\xE2\x84\xA2", "TM"}, {"\t", " "}})));
  return w;
}

TEST(TokenizerUnigram, NormalizesThenTakesTheBestScore) {
  Built tok = build(t5_vocab());
  using V = std::vector<TokenId>;
  auto enc = [&](const std::string& s) { return tok->encode(s, false, false); };
  EXPECT_EQ(enc("hello"), (V{8}));  // "▁hello" (-5) beats "▁he" "llo" (-6)
  EXPECT_EQ(enc("\xEF\xBC\xA1\xE2\x84\xA2"), (V{4, 5}));  // the map: "▁A" "TM"
  EXPECT_EQ(enc("  hello \t x  "), (V{8, 13}));  // runs of spaces (a tab maps to one) merged
  EXPECT_EQ(enc("hello\xE2\x98\x83"), (V{8, 2}));  // no token for the snowman: <unk>
  EXPECT_EQ(enc("\xE2\x98\x83\xE2\x98\x83"), (V{3, 2}));  // consecutive unknowns are one
  EXPECT_EQ(enc("\xFF"), (V{3, 2}));  // invalid UTF-8: U+FFFD, unknown
  EXPECT_EQ(enc("x<sep>x"), (V{13, 14, 13}));  // user-defined tokens split the text
  EXPECT_EQ(enc(""), V{});
  EXPECT_EQ(tok->encode("hello", true, false), (V{8, 1}));  // </s> appended, no BOS
  EXPECT_EQ(tok->decode({8, 13}), " hello x");
  EXPECT_EQ(tok->eos(), 1);
  EXPECT_TRUE(tok->is_end_of_generation(1));
  expect_hostile_text_handled(*tok.tok, "t5_vocab");
}

TEST(TokenizerUnigram, SpacesKeptWithoutTheT5Settings) {
  GgufWriter w = t5_vocab();
  w.set("tokenizer.ggml.add_space_prefix", GgufValue::make_bool(false));
  w.set("tokenizer.ggml.remove_extra_whitespaces", GgufValue::make_bool(false));
  Built tok = build(w);
  // " x" -> "▁x"; "hello" without a prefix: h e l l o... "llo" (-3) beats l l o (-12).
  EXPECT_EQ(tok->encode("hello  x", false, false), (std::vector<TokenId>{9, 10, 7, 3, 13}));
}

// llama.cpp keeps the longest start of a user-defined token as it is, before the character map
// (its trie's longest path, whole token or not): a fullwidth A that starts the user-defined
// "ＡＢ" is not mapped to "A" then.
TEST(TokenizerUnigram, TheStartOfAUserDefinedTokenIsNotNormalized) {
  Built plain = build(t5_vocab());
  EXPECT_EQ(plain->encode("\xEF\xBC\xA1", false, false), (std::vector<TokenId>{4}));  // "▁A"
  Built tok = build(t5_vocab("\xEF\xBC\xA1\xEF\xBC\xA2"));
  EXPECT_EQ(tok->encode("\xEF\xBC\xA1", false, false), (std::vector<TokenId>{3, 2}));  // "▁" <unk>
  EXPECT_EQ(tok->encode("\xEF\xBC\xA1\xEF\xBC\xA2", false, false), (std::vector<TokenId>{15}));
}

TEST(TokenizerUnigram, HostileCharsmapsAreClearErrors) {
  GgufWriter w = t5_vocab();
  w.set("tokenizer.ggml.precompiled_charsmap", byte_array({1, 0, 0}));
  expect_error(w, ErrorKind::Invalid, "precompiled_charsmap");
  w.set("tokenizer.ggml.precompiled_charsmap", byte_array({8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}));
  expect_error(w, ErrorKind::Invalid, "precompiled_charsmap");
  w.set("tokenizer.ggml.precompiled_charsmap",
        GgufValue::make_array(GgufValueType::I32, {GgufValue::make_i32(1)}));
  expect_error(w, ErrorKind::Invalid, "precompiled_charsmap");

  // The root's base points far past the one entry: the walk stops with an error, not a read.
  const uint32_t root = 5000u << 10;
  std::vector<uint8_t> blob = {4, 0, 0, 0};
  for (int i = 0; i < 4; ++i) blob.push_back(uint8_t(root >> (8 * i)));
  blob.push_back(0);
  w.set("tokenizer.ggml.precompiled_charsmap", byte_array(blob));
  Built tok = build(w);
  try {
    tok->encode("A", false, false);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Invalid);
    EXPECT_NE(std::string(e.what()).find("mem.gguf: tokenizer.ggml.precompiled_charsmap: entry"),
              std::string::npos) << e.what();
  }

  // A replacement that runs off the end of the strings.
  blob = build_charsmap({{"A", "B"}});
  blob.pop_back();  // its NUL
  w.set("tokenizer.ggml.precompiled_charsmap", byte_array(blob));
  tok = build(w);
  EXPECT_EQ(tok->encode("x", false, false), (std::vector<TokenId>{13}));
  try {
    tok->encode("A", false, false);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not end"), std::string::npos) << e.what();
  }
}

// The synthetic vocabularies are the fuzzer's for these two models (fuzz/vocab/, .ci/fuzz):
// GALLEON_WRITE_FUZZ_VOCABS=<folder> writes them.
TEST(TokenizerFuzzVocabs, SyntheticVocabsBuild) {
  const char* dir = std::getenv("GALLEON_WRITE_FUZZ_VOCABS");
  for (const auto& [name, w] : {std::pair{"bert.gguf", bert_vocab()}, {"t5.gguf", t5_vocab()}}) {
    EXPECT_NO_THROW(build(w)) << name;
    if (dir) {
      const std::vector<uint8_t> bytes = w.to_bytes();
      testing::write_file(std::string(dir) + "/" + name, std::string(bytes.begin(), bytes.end()));
    }
  }
}

// ---- regex engine -----------------------------------------------------------------------------

std::vector<std::string> split_utf8(const std::string& pattern, const std::string& text) {
  regex::Regex re(pattern);
  auto cps = unicode::decode_utf8_lossy(text);
  std::vector<size_t> lens;
  re.split(cps.data(), cps.size(), lens);
  std::vector<std::string> out;
  size_t at = 0;
  for (size_t n : lens) {
    std::string s;
    for (size_t i = at; i < at + n; ++i) unicode::append_utf8(s, cps[i]);
    out.push_back(s);
    at += n;
  }
  return out;
}

using Pieces = std::vector<std::string>;

TEST(Regex, Basics) {
  EXPECT_EQ(split_utf8("a|ab", "abab"), (Pieces{"a", "b", "a", "b"}));  // leftmost-first
  EXPECT_EQ(split_utf8("ab|a", "abab"), (Pieces{"ab", "ab"}));
  EXPECT_EQ(split_utf8("x+", "axxbx"), (Pieces{"a", "xx", "b", "x"}));
  EXPECT_EQ(split_utf8("x+?", "xx"), (Pieces{"x", "x"}));
  EXPECT_EQ(split_utf8("\\d{2,3}", "1234567"), (Pieces{"123", "456", "7"}));
  EXPECT_EQ(split_utf8("\\d{2}", "12345"), (Pieces{"12", "34", "5"}));
  EXPECT_EQ(split_utf8("[^a-c]+", "abXYcZ"), (Pieces{"ab", "XY", "c", "Z"}));
  EXPECT_EQ(split_utf8("\\s+(?!\\S)", "a   b  "), (Pieces{"a", "  ", " b", "  "}));
  EXPECT_EQ(split_utf8("\\s+$", " a \t "), (Pieces{" a", " \t "}));
  EXPECT_EQ(split_utf8("(?:ab)+c?", "ababcab"), (Pieces{"ababc", "ab"}));
  EXPECT_EQ(split_utf8("a(?=b)", "aab"), (Pieces{"a", "a", "b"}));
  EXPECT_EQ(split_utf8("\\p{L}+", "héllo, wörld"), (Pieces{"héllo", ", ", "wörld"}));
  EXPECT_EQ(split_utf8("\\p{N}", "٣4"), (Pieces{"٣", "4"}));
  EXPECT_EQ(split_utf8("[\\p{P}\\$]+", "a$!.b"), (Pieces{"a", "$!.", "b"}));
  EXPECT_EQ(split_utf8("[一-龥]+", "我想apple"), (Pieces{"我想", "apple"}));
  EXPECT_EQ(split_utf8("\\x41\\u0042", "zAB"), (Pieces{"z", "AB"}));
  EXPECT_EQ(split_utf8("x*", "ab"), (Pieces{"ab"}));  // empty matches are not pieces
}

TEST(Regex, SyntaxErrors) {
  for (const char* bad : {"(", "(?<x>a)", "[a", "a{3,2}", "\\p{Xx}", "*", "a)", "\\q", "[z-a]"}) {
    EXPECT_THROW(regex::Regex{bad}, Error) << bad;
  }
}

TEST(Regex, LinearOnHostileText) {
  // Classic backtracking traps: each would take far too long without failure memoization.
  std::string spaces(50000, ' ');
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(split_utf8("\\s+$", spaces + "x").size(), 1u);
  EXPECT_EQ(split_utf8("(?:a|a)*b", std::string(30000, 'a')).size(), 1u);
  EXPECT_EQ(split_utf8("(?:a*)*b", std::string(30000, 'a')).size(), 1u);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 2.0);
}

Pieces pre(const std::string& name, const std::string& text) {
  auto p = tok::make_pre_tokenizer(name);
  EXPECT_TRUE(p.has_value()) << name;
  return p ? tok::pre_tokenize(*p, text) : Pieces{};
}

TEST(PreTokenizer, Gpt2) {
  EXPECT_EQ(pre("gpt-2", "I'll say: it's 2024!  ok\n\nyes  "),
            (Pieces{"I", "'ll", " say", ":", " it", "'s", " 2024", "!", " ", " ok", "\n", "\n",
                    "yes", "  "}));
  EXPECT_EQ(pre("gpt-2", "我想🦙 x"), (Pieces{"我想", "🦙", " x"}));
  EXPECT_EQ(pre("gpt-2", "'S 'RE"), (Pieces{"'", "S", " '", "RE"}));  // case-sensitive
}

TEST(PreTokenizer, Llama3) {
  EXPECT_EQ(pre("llama-bpe", "I'LL pay 1234567 $ for it!!\n\n  ok  "),
            (Pieces{"I", "'LL", " pay", " ", "123", "456", "7", " $", " for", " it", "!!\n\n",
                    " ", " ok", "  "}));
  EXPECT_EQ(pre("llama-bpe", "x\r\n\r\n  y"), (Pieces{"x", "\r\n\r\n", " ", " y"}));
  EXPECT_EQ(pre("llama-bpe", ".hello 😁?我想"), (Pieces{".hello", " 😁?", "我想"}));
  EXPECT_EQ(pre("llama-bpe", "a \u3000b"), (Pieces{"a", " ", "\u3000b"}));
}

TEST(PreTokenizer, Qwen2) {
  EXPECT_EQ(pre("qwen2", "x 12345 y"), (Pieces{"x", " ", "1", "2", "3", "4", "5", " y"}));
  EXPECT_EQ(pre("qwen2", "we'Ve"), (Pieces{"we", "'Ve"}));
}

TEST(PreTokenizer, Default) {
  // Punctuation runs (the apostrophe too) are split first, then the GPT-2 pattern, then digit
  // runs, then groups of 3 digits.
  EXPECT_EQ(pre("default", "a+b=12345 it's"),
            (Pieces{"a", "+", "b", "=", "123", "45", " it", "'", "s"}));
}

TEST(PreTokenizer, StarcoderAndFalcon) {
  EXPECT_EQ(pre("starcoder", "v12 ab"), (Pieces{"v", "1", "2", " ab"}));
  EXPECT_EQ(pre("refact", "v12 ab"), (Pieces{"v", "1", "2", " ab"}));
  EXPECT_EQ(pre("falcon", "x=1234`y"), (Pieces{"x", "=", "123", "4", "`", "y"}));
  EXPECT_EQ(pre("mpt", "it's 12"), (Pieces{"it", "'s", " 12"}));
}

TEST(PreTokenizer, Deepseek) {
  EXPECT_EQ(pre("deepseek-coder", "int x=42;\n//注释"),
            (Pieces{"int", " x", "=", "4", "2", ";", "\n", "//", "注释"}));
  EXPECT_EQ(pre("deepseek-llm", "Hello, 世界 123 \n end  "),
            (Pieces{"Hello", ",", " ", "世界", " ", "123", " ", "\n", " end", "  "}));
}

// Expected pieces from Python's `regex` module splitting with the same patterns in turn (as
// llama.cpp's unicode_regex_split); random texts agreed too when these were added.
TEST(PreTokenizer, CaseSplittingFamilies) {
  EXPECT_EQ(pre("tekken", "HTTPServer isOK, we'll 2024/x\n\n"),
            (Pieces{"HTTPServer", " is", "OK", ",", " we", "'ll", " ", "2", "0", "2", "4", "/x",
                    "\n\n"}));
  EXPECT_EQ(pre("gpt-4o", "HTTPServer I'M 12345 ok/\n"),
            (Pieces{"HTTPServer", " I'M", " ", "123", "45", " ok", "/\n"}));
  EXPECT_EQ(pre("llama4", "aB"), pre("gpt-4o", "aB"));
}

TEST(PreTokenizer, NewerFamilies) {
  EXPECT_EQ(pre("deepseek-v3", "x.Foo 12345 日本語ひらがなカタカナ \u00e9t\u00e9!"),
            (Pieces{"x", ".Foo", " ", "123", "45", " ", "日本語ひらがなカタカナ",
                    " \u00e9t\u00e9", "!"}));
  EXPECT_EQ(pre("seed-coder", "it's 42 (ok)\n\n  x"),
            (Pieces{"it", "'s", " ", "4", "2", " (", "ok", ")", "\n\n", " ", " x"}));
  EXPECT_EQ(pre("bailingmoe", "I'LL 42!\n\n x"),
            (Pieces{"I", "'LL", " ", "4", "2", "!\n\n", " x"}));
  EXPECT_EQ(pre("chameleon", "<sentinel:7>IMGIMGABZ    x1,2"),
            (Pieces{"<", "sentinel", ":", "7", ">", "IMGIMGABZ", "    ", "x", "1", ",", "2"}));
  EXPECT_EQ(pre("grok-2", "x 12"), pre("qwen2", "x 12"));
  EXPECT_EQ(pre("roberta-bpe", "it's 12"), pre("gpt-2", "it's 12"));
}

TEST(PreTokenizer, UnknownNameIsRejected) {
  EXPECT_FALSE(tok::make_pre_tokenizer("no-such-pre").has_value());
}

}  // namespace
}  // namespace galleon
