// Backtracking regex engine over code points (see unicode_regex.h).
// Pipeline: pattern -> AST (Parser) -> instruction list (Compiler) -> search (Exec).
#include "runtime/unicode_regex.h"

#include <string>
#include <utility>

#include "runtime/error.h"
#include "runtime/unicode.h"

namespace galleon::regex {

namespace {

using unicode::UCat;

constexpr uint32_t kInf = UINT32_MAX;
constexpr uint32_t kMaxRepeat = 1000;
constexpr size_t kMaxProgram = 1u << 20;

[[noreturn]] void syntax_error(const std::string& what) {
  fail(ErrorKind::Invalid, "regex: " + what);
}

// ---- character classes ----------------------------------------------------------------------

struct ClassItem {
  enum Kind : uint8_t { Range, Cats, Space, Word };
  Kind kind = Range;
  bool negate = false;
  uint32_t lo = 0, hi = 0;  // Range
  uint32_t cats = 0;        // Cats: one bit per UCat

  bool base_matches(uint32_t c) const {
    switch (kind) {
      case Range: return lo <= c && c <= hi;
      case Cats: return (cats >> uint32_t(unicode::category(c))) & 1u;
      case Space: return unicode::is_whitespace(c);
      case Word:
        return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
               c == '_';
    }
    return false;
  }
  bool matches(uint32_t c) const { return base_matches(c) != negate; }
};

struct CharClass {
  std::vector<ClassItem> items;
  bool negated = false;
  uint64_t ascii[2] = {0, 0};  // precomputed answers for code points < 128

  bool slow_matches(uint32_t c) const {
    bool any = false;
    for (const auto& it : items) {
      if (it.matches(c)) { any = true; break; }
    }
    return any != negated;
  }
  void finish() {
    for (uint32_t c = 0; c < 128; ++c) {
      if (slow_matches(c)) ascii[c >> 6] |= uint64_t(1) << (c & 63);
    }
  }
  bool matches(uint32_t c) const {
    if (c < 128) return (ascii[c >> 6] >> (c & 63)) & 1u;
    return slow_matches(c);
  }
};

constexpr uint32_t cat_bit(UCat c) { return 1u << uint32_t(c); }
constexpr uint32_t kCatL = cat_bit(UCat::Lu) | cat_bit(UCat::Ll) | cat_bit(UCat::Lt) |
                           cat_bit(UCat::Lm) | cat_bit(UCat::Lo);

uint32_t category_mask(const std::string& name) {
  static const char* const kNames[] = {"Cn", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd",
                                       "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm",
                                       "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co"};
  uint32_t mask = 0;
  for (uint32_t i = 0; i < 30; ++i) {
    std::string_view n = kNames[i];
    if (n == name || (name.size() == 1 && n[0] == name[0])) mask |= 1u << i;
  }
  if (name == "L&" || name == "LC") mask = cat_bit(UCat::Lu) | cat_bit(UCat::Ll) | cat_bit(UCat::Lt);
  if (mask == 0) syntax_error("unknown property \\p{" + name + "}");
  return mask;
}

// ---- AST -------------------------------------------------------------------------------------

struct Node {
  enum Kind : uint8_t { Empty, Lit, Class, Any, Bol, Eol, Cat, Alt, Rep, Look };
  Kind kind = Empty;
  uint32_t cp = 0;       // Lit
  uint32_t cls = 0;      // Class: index into the class list
  uint32_t min = 0, max = 0;
  bool greedy = true;    // Rep
  bool negative = false; // Look
  std::vector<std::unique_ptr<Node>> kids;
};
using NodeP = std::unique_ptr<Node>;

NodeP make(Node::Kind k) {
  auto n = std::make_unique<Node>();
  n->kind = k;
  return n;
}

class Parser {
 public:
  Parser(std::vector<uint32_t> p, std::vector<CharClass>& classes)
      : p_(std::move(p)), classes_(classes) {}

  NodeP parse() {
    NodeP n = parse_alt();
    if (i_ != p_.size()) syntax_error("unmatched ')'");
    return n;
  }

 private:
  bool at_end() const { return i_ >= p_.size(); }
  uint32_t peek(size_t k = 0) const { return i_ + k < p_.size() ? p_[i_ + k] : 0; }
  bool eat(uint32_t c) {
    if (!at_end() && p_[i_] == c) { ++i_; return true; }
    return false;
  }

  NodeP parse_alt() {
    NodeP first = parse_seq();
    if (at_end() || peek() != '|') return first;
    NodeP alt = make(Node::Alt);
    alt->kids.push_back(std::move(first));
    while (eat('|')) alt->kids.push_back(parse_seq());
    return alt;
  }

  NodeP parse_seq() {
    NodeP seq = make(Node::Cat);
    while (!at_end() && peek() != '|' && peek() != ')') {
      NodeP atom = parse_atom();
      seq->kids.push_back(parse_quantifiers(std::move(atom)));
    }
    return seq;
  }

  NodeP parse_quantifiers(NodeP atom) {
    uint32_t mn = 0, mx = 0;
    while (parse_quant(mn, mx)) {
      if (atom->kind == Node::Bol || atom->kind == Node::Eol || atom->kind == Node::Look) {
        syntax_error("quantifier after an assertion");
      }
      NodeP rep = make(Node::Rep);
      rep->min = mn;
      rep->max = mx;
      rep->greedy = !eat('?');
      if (eat('+')) syntax_error("possessive quantifiers are not supported");
      rep->kids.push_back(std::move(atom));
      atom = std::move(rep);
    }
    return atom;
  }

  bool parse_quant(uint32_t& mn, uint32_t& mx) {
    if (eat('?')) { mn = 0; mx = 1; return true; }
    if (eat('*')) { mn = 0; mx = kInf; return true; }
    if (eat('+')) { mn = 1; mx = kInf; return true; }
    if (peek() == '{') return parse_braces(mn, mx);
    return false;
  }

  // {m} {m,} {m,n}; anything else after '{' is a literal '{' (PCRE).
  bool parse_braces(uint32_t& mn, uint32_t& mx) {
    size_t save = i_;
    ++i_;
    uint32_t a = 0, b = 0;
    if (!parse_number(a)) { i_ = save; return false; }
    if (eat('}')) { mn = mx = a; return check_counts(mn, mx); }
    if (!eat(',')) { i_ = save; return false; }
    if (eat('}')) { mn = a; mx = kInf; return check_counts(mn, mx); }
    if (!parse_number(b) || !eat('}')) { i_ = save; return false; }
    mn = a;
    mx = b;
    return check_counts(mn, mx);
  }

  static bool check_counts(uint32_t mn, uint32_t mx) {
    if (mn > kMaxRepeat || (mx != kInf && mx > kMaxRepeat)) syntax_error("repeat count too large");
    if (mx < mn) syntax_error("repeat counts out of order");
    return true;
  }

  bool parse_number(uint32_t& v) {
    size_t start = i_;
    v = 0;
    while (!at_end() && peek() >= '0' && peek() <= '9') {
      v = std::min<uint32_t>(v * 10 + (peek() - '0'), 100000);
      ++i_;
    }
    return i_ > start;
  }

  NodeP parse_atom() {
    uint32_t c = p_[i_++];
    switch (c) {
      case '(': return parse_group();
      case '[': return parse_class();
      case '.': return make_any();
      case '^': return make(Node::Bol);
      case '$': return make(Node::Eol);
      case '\\': return parse_escape();
      case '*': case '+': case '?': syntax_error("quantifier without an operand");
      default: return make_lit(c);
    }
  }

  NodeP make_lit(uint32_t c) {
    NodeP n = make(Node::Lit);
    n->cp = c;
    return n;
  }

  NodeP make_class(CharClass cc) {
    cc.finish();
    classes_.push_back(std::move(cc));
    NodeP n = make(Node::Class);
    n->cls = uint32_t(classes_.size() - 1);
    return n;
  }

  NodeP make_any() {
    CharClass cc;
    cc.negated = true;
    for (uint32_t c : {uint32_t('\n'), uint32_t('\r'), 0x2028u, 0x2029u}) {
      ClassItem it;
      it.lo = it.hi = c;
      cc.items.push_back(it);
    }
    return make_class(std::move(cc));
  }

  NodeP parse_group() {
    NodeP n;
    if (eat('?')) {
      if (eat(':')) {
        n = parse_alt();
      } else if (eat('=') || peek() == '!') {
        bool negative = eat('!');
        n = make(Node::Look);
        n->negative = negative;
        n->kids.push_back(parse_alt());
      } else {
        syntax_error("unsupported group syntax '(?'");
      }
    } else {
      n = parse_alt();
    }
    if (!eat(')')) syntax_error("missing ')'");
    return n;
  }

  NodeP parse_escape() {
    if (at_end()) syntax_error("trailing backslash");
    ClassItem item;
    uint32_t lit = 0;
    if (parse_escape_body(item, lit)) return make_lit(lit);
    CharClass cc;
    cc.items.push_back(item);
    return make_class(std::move(cc));
  }

  uint32_t parse_hex_digits(size_t max_digits, bool exact) {
    uint32_t v = 0;
    size_t n = 0;
    while (n < max_digits && !at_end()) {
      uint32_t c = peek(), d;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else break;
      v = v * 16 + d;
      ++n;
      ++i_;
    }
    if (n == 0 || (exact && n != max_digits) || v > 0x10FFFF) syntax_error("bad hex escape");
    return v;
  }

  uint32_t parse_hex_escape() {
    if (eat('{')) {
      uint32_t v = parse_hex_digits(6, false);
      if (!eat('}')) syntax_error("missing '}' in \\x{...}");
      return v;
    }
    return parse_hex_digits(2, true);
  }

  uint32_t parse_property() {
    std::string name;
    if (eat('{')) {
      while (!at_end() && peek() != '}') name.push_back(char(p_[i_++] & 0x7F));
      if (!eat('}')) syntax_error("missing '}' in \\p{...}");
    } else if (!at_end()) {
      name.push_back(char(p_[i_++] & 0x7F));
    }
    return category_mask(name);
  }

  // After a backslash: true and `lit` for a single character, false and `item` for a set.
  bool parse_escape_body(ClassItem& item, uint32_t& lit) {
    uint32_t c = p_[i_++];
    switch (c) {
      case 'n': lit = '\n'; return true;
      case 'r': lit = '\r'; return true;
      case 't': lit = '\t'; return true;
      case 'f': lit = '\f'; return true;
      case 'v': lit = '\v'; return true;
      case '0': lit = 0; return true;
      case 'x': lit = parse_hex_escape(); return true;
      case 'u': lit = parse_hex_digits(4, true); return true;
      case 's': case 'S': item.kind = ClassItem::Space; item.negate = c == 'S'; return false;
      case 'w': case 'W': item.kind = ClassItem::Word; item.negate = c == 'W'; return false;
      case 'd': case 'D':
        item.kind = ClassItem::Range;
        item.lo = '0';
        item.hi = '9';
        item.negate = c == 'D';
        return false;
      case 'p': case 'P':
        item.kind = ClassItem::Cats;
        item.cats = parse_property();
        item.negate = c == 'P';
        return false;
      default:
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '1' && c <= '9')) {
          syntax_error(std::string("unsupported escape \\") + char(c));
        }
        lit = c;
        return true;
    }
  }

  // One class member: a literal (returns true) or a set item.
  bool parse_class_atom(ClassItem& item, uint32_t& lit) {
    if (at_end()) syntax_error("missing ']'");
    uint32_t c = p_[i_++];
    if (c != '\\') { lit = c; return true; }
    if (at_end()) syntax_error("trailing backslash");
    if (peek() == 'b') { ++i_; lit = '\b'; return true; }
    return parse_escape_body(item, lit);
  }

  NodeP parse_class() {
    CharClass cc;
    cc.negated = eat('^');
    bool first = true;
    while (true) {
      if (at_end()) syntax_error("missing ']'");
      if (peek() == ']' && !first) { ++i_; break; }
      first = false;
      ClassItem item;
      uint32_t lo = 0;
      if (!parse_class_atom(item, lo)) { cc.items.push_back(item); continue; }
      item.kind = ClassItem::Range;
      item.lo = item.hi = lo;
      if (peek() == '-' && peek(1) != ']' && i_ + 1 < p_.size()) {
        ++i_;
        ClassItem hi_item;
        uint32_t hi = 0;
        if (!parse_class_atom(hi_item, hi)) syntax_error("bad range in class");
        if (hi < lo) syntax_error("range out of order in class");
        item.hi = hi;
      }
      cc.items.push_back(item);
    }
    return make_class(std::move(cc));
  }

  std::vector<uint32_t> p_;
  size_t i_ = 0;
  std::vector<CharClass>& classes_;
};

// ---- program ---------------------------------------------------------------------------------

enum class Op : uint8_t { Char, Class, Split, Jmp, Bol, Eol, Look, Match };

struct Inst {
  Op op = Op::Match;
  bool negative = false;  // Look
  uint32_t a = 0;         // Char: code point; Class: index; Split/Jmp: target; Look: body start
  uint32_t b = 0;         // Split: second target
};

}  // namespace

struct Regex::Program {
  std::vector<Inst> code;
  std::vector<CharClass> classes;
  uint32_t look_depth = 0;  // deepest nesting of lookaheads
};

namespace {

class Compiler {
 public:
  explicit Compiler(Regex::Program& p) : p_(p) {}

  void compile(const Node& root) {
    emit_node(root, 0);
    emit(Op::Match);
  }

 private:
  uint32_t emit(Op op, uint32_t a = 0, uint32_t b = 0) {
    if (p_.code.size() >= kMaxProgram) syntax_error("pattern too large");
    Inst in;
    in.op = op;
    in.a = a;
    in.b = b;
    p_.code.push_back(in);
    return uint32_t(p_.code.size() - 1);
  }
  uint32_t here() const { return uint32_t(p_.code.size()); }

  void emit_node(const Node& n, uint32_t depth) {
    switch (n.kind) {
      case Node::Empty: break;
      case Node::Lit: emit(Op::Char, n.cp); break;
      case Node::Class: emit(Op::Class, n.cls); break;
      case Node::Any: break;  // never produced (compiled as a class)
      case Node::Bol: emit(Op::Bol); break;
      case Node::Eol: emit(Op::Eol); break;
      case Node::Cat:
        for (const auto& k : n.kids) emit_node(*k, depth);
        break;
      case Node::Alt: emit_alt(n, depth); break;
      case Node::Rep: emit_rep(n, depth); break;
      case Node::Look: emit_look(n, depth); break;
    }
  }

  void emit_alt(const Node& n, uint32_t depth) {
    std::vector<uint32_t> exits;
    for (size_t k = 0; k < n.kids.size(); ++k) {
      bool last = k + 1 == n.kids.size();
      uint32_t split = last ? 0 : emit(Op::Split);
      if (!last) p_.code[split].a = here();
      emit_node(*n.kids[k], depth);
      if (!last) {
        exits.push_back(emit(Op::Jmp));
        p_.code[split].b = here();
      }
    }
    for (uint32_t j : exits) p_.code[j].a = here();
  }

  // Split whose preferred branch is the next instruction (greedy) or `target` (lazy).
  uint32_t emit_choice(bool greedy) {
    uint32_t s = emit(Op::Split);
    if (greedy) p_.code[s].a = s + 1;
    else p_.code[s].b = s + 1;
    return s;
  }
  void set_exit(uint32_t split, bool greedy, uint32_t target) {
    if (greedy) p_.code[split].b = target;
    else p_.code[split].a = target;
  }

  void emit_rep(const Node& n, uint32_t depth) {
    const Node& body = *n.kids[0];
    for (uint32_t k = 0; k < n.min; ++k) emit_node(body, depth);
    if (n.max == kInf) {
      uint32_t s = emit_choice(n.greedy);
      emit_node(body, depth);
      emit(Op::Jmp, s);
      set_exit(s, n.greedy, here());
      return;
    }
    std::vector<uint32_t> splits;
    for (uint32_t k = n.min; k < n.max; ++k) {
      splits.push_back(emit_choice(n.greedy));
      emit_node(body, depth);
    }
    for (uint32_t s : splits) set_exit(s, n.greedy, here());
  }

  void emit_look(const Node& n, uint32_t depth) {
    p_.look_depth = std::max(p_.look_depth, depth + 1);
    uint32_t look = emit(Op::Look);
    p_.code[look].negative = n.negative;
    uint32_t jmp = emit(Op::Jmp);
    p_.code[look].a = here();
    emit_node(*n.kids[0], depth + 1);
    emit(Op::Match);
    p_.code[jmp].a = here();
  }

  Regex::Program& p_;
};

// ---- execution -------------------------------------------------------------------------------

struct Frame {
  uint32_t pc;
  uint32_t alt;  // successors tried so far
  size_t pos;
};

class Exec {
 public:
  Exec(const Regex::Program& p, const uint32_t* s, size_t n)
      : p_(p), s_(s), n_(n), stacks_(p.look_depth + 1) {
    visited_.assign((p.code.size() * (n + 1) + 63) / 64, 0);
  }

  // Leftmost non-empty match starting at or after `from`.
  bool search(size_t from, size_t* begin, size_t* end) {
    for (size_t start = from; start < n_; ++start) {
      if (!may_start(start)) continue;
      if (run(0, start, 0, false, end)) {
        *begin = start;
        return true;
      }
    }
    return false;
  }

 private:
  bool may_start(size_t pos) const {
    const Inst& in = p_.code[0];
    if (in.op == Op::Char) return s_[pos] == in.a;
    if (in.op == Op::Class) return p_.classes[in.a].matches(s_[pos]);
    return true;
  }

  size_t bit(uint32_t pc, size_t pos) const { return size_t(pc) * (n_ + 1) + pos; }
  // Marks (pc, pos); false when it was already marked (in progress or known to fail).
  bool enter(uint32_t pc, size_t pos) {
    size_t b = bit(pc, pos);
    uint64_t mask = uint64_t(1) << (b & 63);
    if (visited_[b >> 6] & mask) return false;
    visited_[b >> 6] |= mask;
    return true;
  }
  void leave_path(const std::vector<Frame>& path) {
    for (const Frame& f : path) {
      size_t b = bit(f.pc, f.pos);
      visited_[b >> 6] &= ~(uint64_t(1) << (b & 63));
    }
  }

  // The next untried successor of the top frame; false when none is left.
  bool next_successor(Frame& f, uint32_t depth, uint32_t* pc, size_t* pos) {
    const Inst& in = p_.code[f.pc];
    uint32_t alt = f.alt++;
    *pos = f.pos;
    switch (in.op) {
      case Op::Char:
        if (alt != 0 || f.pos >= n_ || s_[f.pos] != in.a) return false;
        *pc = f.pc + 1;
        *pos = f.pos + 1;
        return true;
      case Op::Class:
        if (alt != 0 || f.pos >= n_ || !p_.classes[in.a].matches(s_[f.pos])) return false;
        *pc = f.pc + 1;
        *pos = f.pos + 1;
        return true;
      case Op::Split:
        if (alt > 1) return false;
        *pc = alt == 0 ? in.a : in.b;
        return true;
      case Op::Jmp:
        *pc = in.a;
        return alt == 0;
      case Op::Bol:
        *pc = f.pc + 1;
        return alt == 0 && f.pos == 0;
      case Op::Eol:
        *pc = f.pc + 1;
        return alt == 0 && f.pos == n_;
      case Op::Look: {
        if (alt != 0) return false;
        size_t ignored = 0;
        size_t at = f.pos;  // f may move: run() uses another stack, but copy anyway
        uint32_t next = f.pc + 1;
        bool found = run(in.a, at, depth + 1, true, &ignored);
        *pc = next;
        *pos = at;
        return found != in.negative;
      }
      case Op::Match:
        return false;
    }
    return false;
  }

  // Depth-first search from (pc0, pos0) for a Match; `sub` accepts empty matches (lookahead).
  bool run(uint32_t pc0, size_t pos0, uint32_t depth, bool sub, size_t* end) {
    std::vector<Frame>& stack = stacks_[depth];
    stack.clear();
    if (p_.code[pc0].op == Op::Match) {
      *end = pos0;
      return sub;
    }
    if (!enter(pc0, pos0)) return false;
    stack.push_back({pc0, 0, pos0});
    while (!stack.empty()) {
      uint32_t pc = 0;
      size_t pos = 0;
      if (!next_successor(stack.back(), depth, &pc, &pos)) {
        stack.pop_back();
        continue;
      }
      if (p_.code[pc].op == Op::Match) {
        if (!sub && pos == pos0) continue;  // empty match: not accepted
        *end = pos;
        leave_path(stack);
        return true;
      }
      if (enter(pc, pos)) stack.push_back({pc, 0, pos});
    }
    return false;
  }

  const Regex::Program& p_;
  const uint32_t* s_;
  size_t n_;
  std::vector<uint64_t> visited_;
  std::vector<std::vector<Frame>> stacks_;
};

}  // namespace

Regex::Regex(std::string_view pattern) : prog_(std::make_unique<Program>()) {
  Parser parser(unicode::decode_utf8_lossy(pattern), prog_->classes);
  NodeP root = parser.parse();
  Compiler(*prog_).compile(*root);
}

Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

bool Regex::search(const uint32_t* s, size_t n, size_t from, size_t* begin, size_t* end) const {
  Exec ex(*prog_, s, n);
  return ex.search(from, begin, end);
}

void Regex::split(const uint32_t* s, size_t n, std::vector<size_t>& out) const {
  Exec ex(*prog_, s, n);
  size_t prev = 0, b = 0, e = 0;
  while (prev < n && ex.search(prev, &b, &e)) {
    if (b > prev) out.push_back(b - prev);
    out.push_back(e - b);
    prev = e;
  }
  if (prev < n) out.push_back(n - prev);
}

}  // namespace galleon::regex
