// Unicode tables and UTF-8 helpers (see unicode.h).
#include "runtime/unicode.h"

#include <algorithm>
#include <array>

namespace galleon::unicode {

namespace {

struct CategoryRange {
  uint32_t first;
  uint32_t last;
  uint8_t cat;
};
struct CodeRange {
  uint32_t first;
  uint32_t last;
};
struct MapRange {
  uint32_t first;
  uint32_t last;
  uint32_t to;
};
struct CodePair {
  uint32_t from;
  uint32_t to;
};

#include "runtime/unicode_tables.inc"

struct ByteAlphabet {
  std::array<uint32_t, 256> to_cpt{};
  std::array<int16_t, 324> to_byte{};  // code points < 324 cover the whole alphabet
  ByteAlphabet() {
    to_byte.fill(-1);
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_cpt[b] = printable ? b : next++;
      to_byte[to_cpt[b]] = int16_t(b);
    }
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet table;
  return table;
}

}  // namespace

UCat category(uint32_t cp) {
  const auto* end = std::end(kCategoryRanges);
  const auto* it = std::upper_bound(std::begin(kCategoryRanges), end, cp,
                                    [](uint32_t v, const CategoryRange& r) { return v < r.first; });
  if (it == std::begin(kCategoryRanges)) return UCat::Cn;
  --it;
  return cp <= it->last ? UCat(it->cat) : UCat::Cn;
}

uint32_t category_class(UCat c) {
  switch (c) {
    case UCat::Lu: case UCat::Ll: case UCat::Lt: case UCat::Lm: case UCat::Lo: return kLetter;
    case UCat::Mn: case UCat::Mc: case UCat::Me: return kMark;
    case UCat::Nd: case UCat::Nl: case UCat::No: return kNumber;
    case UCat::Pc: case UCat::Pd: case UCat::Ps: case UCat::Pe: case UCat::Pi: case UCat::Pf:
    case UCat::Po: return kPunct;
    case UCat::Sm: case UCat::Sc: case UCat::Sk: case UCat::So: return kSymbol;
    case UCat::Zs: case UCat::Zl: case UCat::Zp: return kSeparator;
    default: return kOther;
  }
}

bool is_whitespace(uint32_t cp) {
  for (const auto& r : kWhiteSpaceRanges) {
    if (cp < r.first) return false;
    if (cp <= r.last) return true;
  }
  return false;
}

uint32_t first_nfd(uint32_t cp) {
  const auto* it = std::upper_bound(std::begin(kFirstNfdRanges), std::end(kFirstNfdRanges), cp,
                                    [](uint32_t v, const MapRange& r) { return v < r.first; });
  if (it == std::begin(kFirstNfdRanges)) return cp;
  --it;
  return cp <= it->last ? it->to : cp;
}

uint32_t first_lower(uint32_t cp) {
  const auto* end = std::end(kFirstLowerPairs);
  const auto* it = std::lower_bound(std::begin(kFirstLowerPairs), end, cp,
                                    [](const CodePair& p, uint32_t v) { return p.from < v; });
  return it != end && it->from == cp ? it->to : cp;
}

size_t utf8_len(uint8_t lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

namespace {

// One code point at s[i], advancing i; false (i unchanged) when the sequence is invalid.
bool decode_one(std::string_view s, size_t& i, uint32_t& cp) {
  auto b = [&](size_t k) { return uint8_t(s[i + k]); };
  auto cont = [&](size_t k) { return i + k < s.size() && (b(k) & 0xC0) == 0x80; };
  uint8_t c = b(0);
  if (c < 0x80) { cp = c; i += 1; return true; }
  if ((c & 0x40) == 0) return false;
  if ((c & 0x20) == 0) {
    if (!cont(1)) return false;
    cp = (uint32_t(c & 0x1F) << 6) | (b(1) & 0x3F);
    i += 2;
    return true;
  }
  if ((c & 0x10) == 0) {
    if (!cont(1) || !cont(2)) return false;
    cp = (uint32_t(c & 0x0F) << 12) | (uint32_t(b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    i += 3;
    return true;
  }
  if ((c & 0x08) == 0) {
    if (!cont(1) || !cont(2) || !cont(3)) return false;
    cp = (uint32_t(c & 0x07) << 18) | (uint32_t(b(1) & 0x3F) << 12) |
         (uint32_t(b(2) & 0x3F) << 6) | (b(3) & 0x3F);
    i += 4;
    return true;
  }
  return false;
}

}  // namespace

size_t utf8_valid_len(std::string_view s, size_t i) {
  uint32_t cp = 0;
  const size_t start = i;
  return i < s.size() && decode_one(s, i, cp) ? i - start : 0;
}

std::vector<uint32_t> decode_utf8_lossy(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    uint32_t cp = 0;
    if (!decode_one(s, i, cp)) {
      ++i;
      cp = 0xFFFD;
    } else if (cp > 0x10FFFF) {
      cp = 0xFFFD;
    }
    out.push_back(cp);
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp > 0x10FFFF) cp = 0xFFFD;
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

std::string to_utf8(uint32_t cp) {
  std::string s;
  append_utf8(s, cp);
  return s;
}

uint32_t byte_to_cpt(uint8_t b) { return byte_alphabet().to_cpt[b]; }

int cpt_to_byte(uint32_t cp) {
  const auto& t = byte_alphabet().to_byte;
  return cp < t.size() ? t[cp] : -1;
}

}  // namespace galleon::unicode
