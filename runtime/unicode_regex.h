// A small backtracking regular-expression engine over Unicode code points, for the BPE
// pre-tokenizers (runtime/tokenizer_bpe.cpp). Not std::regex: its behaviour must not depend on
// the C++ library or the locale.
//
// Syntax: literals; escapes \r \n \t \f \v \0 \xHH \x{H...} \uHHHH and escaped punctuation;
// . (anything but \n \r U+2028 U+2029); classes [...] / [^...] with ranges and the escapes below;
// \s \S (Unicode White_Space), \d \D ([0-9]), \w \W ([A-Za-z0-9_]); \p{X} \P{X} and \pX for the
// general categories (L Lu Ll Lt Lm Lo M Mn Mc Me N Nd Nl No P Pc Pd Ps Pe Pi Pf Po S Sm Sc Sk So
// Z Zs Zl Zp C Cc Cf Cs Co Cn); alternation |; groups (...) and (?:...) (nothing is captured);
// lookahead (?=...) (?!...); quantifiers ? * + {m} {m,} {m,n}, greedy or lazy (suffix ?);
// anchors ^ and $ (ECMAScript: start and end of the subject only).
//
// Matching is leftmost-first (PCRE/ECMAScript alternation order). The executor is a backtracking
// search that remembers failed (instruction, position) states, so its time is bounded by
// program size x subject length (no exponential or quadratic blow-up on hostile text).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

namespace galleon::regex {

class Regex {
 public:
  // Compiles a UTF-8 pattern; Error(Invalid) on a syntax error or an unsupported construct.
  explicit Regex(std::string_view pattern);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;

  // Leftmost-first search of s[0, n) for a non-empty match beginning at or after `from`.
  // Returns false when there is none; otherwise [*begin, *end).
  bool search(const uint32_t* s, size_t n, size_t from, size_t* begin, size_t* end) const;

  // Splits s[0, n) into consecutive pieces: every match, and every stretch of text between
  // matches (as llama.cpp's unicode_regex_split does). Appends the piece lengths to `out`.
  void split(const uint32_t* s, size_t n, std::vector<size_t>& out) const;

  struct Program;

 private:
  std::unique_ptr<Program> prog_;
};

}  // namespace galleon::regex
