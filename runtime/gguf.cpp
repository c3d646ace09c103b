// GGUF v2/v3 reader and v3 writer. Every field read from a file is checked against the bytes
// that remain before anything is allocated or read; see docs/gguf.md for the list of checks.
#include "runtime/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "runtime/error.h"
#include "runtime/huge_memory.h"

namespace galleon {
namespace {

constexpr uint8_t kMagic[4] = {'G', 'G', 'U', 'F'};
// Smallest possible encodings, used to bound counts by the bytes that remain.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;                  // key length, key, type, u8
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;  // name, 1 dim, type, offset
constexpr uint32_t kMaxDims = 4;
constexpr uint64_t kInt64Max = uint64_t(std::numeric_limits<int64_t>::max());
constexpr size_t kQuoteMax = 96;

[[noreturn]] void invalid(std::string msg) { fail(ErrorKind::Invalid, std::move(msg)); }

std::string num(uint64_t v) { return std::to_string(v); }
std::string snum(int64_t v) { return std::to_string(v); }

// 'name' for messages: printable ASCII kept, other bytes as \xNN, long names cut.
std::string quote(std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out = "'";
  size_t n = std::min(s.size(), kQuoteMax);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      out += char(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (s.size() > n) out += "...";
  out += "'";
  return out;
}

bool known_value_type(uint32_t t) { return t <= uint32_t(GgufValueType::F64); }

bool is_unsigned(GgufValueType t) {
  return t == GgufValueType::U8 || t == GgufValueType::U16 || t == GgufValueType::U32 ||
         t == GgufValueType::U64;
}
bool is_signed(GgufValueType t) {
  return t == GgufValueType::I8 || t == GgufValueType::I16 || t == GgufValueType::I32 ||
         t == GgufValueType::I64;
}

// Bytes the smallest value of type t takes in a file.
uint64_t min_value_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::BOOL: return 1;
    case GgufValueType::U16: case GgufValueType::I16: return 2;
    case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::F32: return 4;
    case GgufValueType::U64: case GgufValueType::I64: case GgufValueType::F64: return 8;
    case GgufValueType::STRING: return 8;  // length, no bytes
    case GgufValueType::ARRAY: return 12;  // element type, count
  }
  return 1;
}

std::string describe(const GgufValue& v) {
  std::string s = gguf_value_type_name(v.type);
  if (v.type == GgufValueType::ARRAY) s += std::string(" of ") + gguf_value_type_name(v.elem_type);
  return s;
}

uint64_t round_up(uint64_t x, uint64_t align) {
  uint64_t rem = x % align;
  if (rem == 0) return x;
  uint64_t out;
  if (__builtin_add_overflow(x, align - rem, &out)) invalid("offset overflows");
  return out;
}

bool is_pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// ---------------------------------------------------------------------------------------------
// Cursor: bounds-checked little-endian reads over an image.

class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size) : data_(data), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t size() const { return size_; }
  uint64_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, const char* what) const {
    if (n > remaining())
      invalid(std::string(what) + ": needs " + num(n) + " bytes at offset " + num(pos_) +
              ", but the file ends at " + num(size_));
  }
  const uint8_t* take(uint64_t n, const char* what) {
    need(n, what);
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint8_t u8(const char* what) { return *take(1, what); }
  uint16_t u16(const char* what) { return uint16_t(le(take(2, what), 2)); }
  uint32_t u32(const char* what) { return uint32_t(le(take(4, what), 4)); }
  uint64_t u64(const char* what) { return le(take(8, what), 8); }
  std::string str(const char* what) {
    uint64_t n = u64(what);
    if (n > remaining())
      invalid(std::string(what) + ": length " + num(n) + " exceeds the " + num(remaining()) +
              " bytes left in the file");
    const uint8_t* p = take(n, what);
    return std::string(reinterpret_cast<const char*>(p), size_t(n));
  }

 private:
  static uint64_t le(const uint8_t* p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
  }
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Metadata values.

void set_signed(GgufValue& v, int64_t x) {
  v.i = x;
  v.u = x >= 0 ? uint64_t(x) : 0;
}
void set_unsigned(GgufValue& v, uint64_t x) {
  v.u = x;
  v.i = x <= kInt64Max ? int64_t(x) : 0;
}

class ValueReader {
 public:
  explicit ValueReader(Cursor& cur) : cur_(cur) {}

  GgufValue read(GgufValueType t, int depth) {
    GgufValue v;
    v.type = t;
    switch (t) {
      case GgufValueType::U8: set_unsigned(v, cur_.u8("u8 value")); break;
      case GgufValueType::I8: set_signed(v, int8_t(cur_.u8("i8 value"))); break;
      case GgufValueType::U16: set_unsigned(v, cur_.u16("u16 value")); break;
      case GgufValueType::I16: set_signed(v, int16_t(cur_.u16("i16 value"))); break;
      case GgufValueType::U32: set_unsigned(v, cur_.u32("u32 value")); break;
      case GgufValueType::I32: set_signed(v, int32_t(cur_.u32("i32 value"))); break;
      case GgufValueType::U64: set_unsigned(v, cur_.u64("u64 value")); break;
      case GgufValueType::I64: set_signed(v, int64_t(cur_.u64("i64 value"))); break;
      case GgufValueType::F32: v.f = read_f32(); break;
      case GgufValueType::F64: v.f = read_f64(); break;
      case GgufValueType::BOOL: set_unsigned(v, read_bool()); break;
      case GgufValueType::STRING: v.s = cur_.str("string"); break;
      case GgufValueType::ARRAY: read_array(v, depth); break;
    }
    return v;
  }

 private:
  float read_f32() {
    uint32_t bits = cur_.u32("f32 value");
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  double read_f64() {
    uint64_t bits = cur_.u64("f64 value");
    double d;
    std::memcpy(&d, &bits, 8);
    return d;
  }
  uint64_t read_bool() {
    uint8_t b = cur_.u8("bool value");
    if (b > 1) invalid("bool value " + num(b) + " (expected 0 or 1)");
    return b;
  }

  void read_array(GgufValue& v, int depth) {
    if (depth >= kGgufMaxArrayDepth)
      invalid("arrays nested more than " + num(kGgufMaxArrayDepth) + " levels deep");
    uint32_t elem = cur_.u32("array element type");
    if (!known_value_type(elem))
      invalid("array element type " + num(elem) + " is unknown (expected 0 to 12)");
    v.elem_type = GgufValueType(elem);
    uint64_t count = cur_.u64("array length");
    uint64_t min = min_value_bytes(v.elem_type);
    if (count > cur_.remaining() / min)
      invalid("array length " + num(count) + " of " + gguf_value_type_name(v.elem_type) +
              " cannot fit in the " + num(cur_.remaining()) + " bytes left in the file (at least " +
              num(min) + " bytes per element)");
    if (count > budget_)
      invalid("array length " + num(count) + " exceeds the limit of " +
              num(kGgufMaxMetadataValues) + " metadata array elements per file");
    budget_ -= count;
    v.arr.reserve(size_t(count));
    for (uint64_t k = 0; k < count; ++k) {
      try {
        v.arr.push_back(read(v.elem_type, depth + 1));
      } catch (Error& e) {
        e.add_context("element " + num(k));
        throw;
      }
    }
  }

  Cursor& cur_;
  uint64_t budget_ = kGgufMaxMetadataValues;
};

// ---------------------------------------------------------------------------------------------
// The parser: header, metadata, tensor infos, data section layout.

struct Parsed {
  uint32_t version = 0;
  uint64_t alignment = kGgufDefaultAlignment;
  uint64_t data_offset = 0;
  std::vector<std::pair<std::string, GgufValue>> kv;
  std::map<std::string, size_t, std::less<>> kv_index;
  std::vector<GgufTensorInfo> tensors;
  std::map<std::string, size_t, std::less<>> tensor_index;
};

class Parser {
 public:
  Parser(const uint8_t* data, uint64_t size) : cur_(data, size), values_(cur_) {}

  Parsed run() {
    with_context("header", [&] { read_header(); });
    read_metadata();
    with_context("key 'general.alignment'", [&] { resolve_alignment(); });
    read_tensor_infos();
    out_.data_offset = round_up(cur_.pos(), out_.alignment);
    check_tensor_ranges();
    check_overlaps();
    return std::move(out_);
  }

 private:
  void read_header() {
    const uint8_t* magic = cur_.take(4, "magic");
    if (std::memcmp(magic, kMagic, 4) != 0)
      invalid("magic is " + quote(std::string_view(reinterpret_cast<const char*>(magic), 4)) +
              " (expected 'GGUF')");
    uint32_t version = cur_.u32("version");
    check_version(version);
    out_.version = version;
    n_tensors_ = cur_.u64("tensor count");
    n_kv_ = cur_.u64("metadata count");
    uint64_t left = cur_.remaining();
    if (n_kv_ > left / kMinKvBytes)
      invalid("metadata count " + num(n_kv_) + " cannot fit in the " + num(left) +
              " bytes left in the file (at most " + num(left / kMinKvBytes) + " entries)");
    left -= n_kv_ * kMinKvBytes;
    if (n_tensors_ > left / kMinTensorInfoBytes)
      invalid("tensor count " + num(n_tensors_) + " cannot fit in the " + num(left) +
              " bytes left after the metadata (at most " + num(left / kMinTensorInfoBytes) +
              " tensors)");
  }

  static void check_version(uint32_t version) {
    if (version == 2 || version == 3) return;
    if (version == 1) invalid("version 1 is not supported (expected GGUF version 2 or 3)");
    if (version == 0x02000000u || version == 0x03000000u)
      invalid("version " + num(version) +
              " looks like a big-endian GGUF; only little-endian files are supported");
    invalid("unknown version " + num(version) + " (expected GGUF version 2 or 3)");
  }

  void read_metadata() {
    for (uint64_t k = 0; k < n_kv_; ++k) {
      std::string key = with_context("metadata entry " + num(k), [&] {
        std::string s = cur_.str("key");
        if (s.empty()) invalid("key is empty");
        return s;
      });
      if (out_.kv_index.count(key))
        invalid("key " + quote(key) + " appears twice (metadata entries " +
                num(out_.kv_index.find(key)->second) + " and " + num(k) + ")");
      GgufValue value = with_context("key " + quote(key), [&] {
        uint32_t type = cur_.u32("value type");
        if (!known_value_type(type))
          invalid("value type " + num(type) + " is unknown (expected 0 to 12)");
        return values_.read(GgufValueType(type), 0);
      });
      out_.kv_index.emplace(key, out_.kv.size());
      out_.kv.emplace_back(std::move(key), std::move(value));
    }
  }

  void resolve_alignment() {
    auto it = out_.kv_index.find("general.alignment");
    if (it == out_.kv_index.end()) return;
    const GgufValue& v = out_.kv[it->second].second;
    if (v.type != GgufValueType::U32) invalid("expected type u32, found " + describe(v));
    if (!is_pow2(v.u)) invalid("value " + num(v.u) + " is not a non-zero power of two");
    out_.alignment = v.u;
  }

  void read_tensor_infos() {
    for (uint64_t k = 0; k < n_tensors_; ++k) {
      GgufTensorInfo t;
      t.name = with_context("tensor info " + num(k), [&] {
        std::string s = cur_.str("tensor name");
        if (s.empty()) invalid("tensor name is empty");
        return s;
      });
      if (out_.tensor_index.count(t.name))
        invalid("tensor " + quote(t.name) + ": name appears twice (tensor infos " +
                num(out_.tensor_index.find(t.name)->second) + " and " + num(k) + ")");
      with_context("tensor " + quote(t.name), [&] { read_tensor_body(t); });
      out_.tensor_index.emplace(t.name, out_.tensors.size());
      out_.tensors.push_back(std::move(t));
    }
  }

  void read_tensor_body(GgufTensorInfo& t) {
    uint32_t n_dims = cur_.u32("dimension count");
    if (n_dims == 0 || n_dims > kMaxDims)
      invalid("dimension count " + num(n_dims) + " (expected 1 to " + num(kMaxDims) + ")");
    uint64_t elems = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = cur_.u64("dimension");
      if (ne == 0) invalid("dimension " + num(d) + " is 0 (expected at least 1)");
      if (ne > kInt64Max) invalid("dimension " + num(d) + " is " + num(ne) + " (above INT64_MAX)");
      if (__builtin_mul_overflow(elems, ne, &elems) || elems > kInt64Max)
        invalid("element count overflows at dimension " + num(d) + " (" + num(ne) + ")");
      t.dims.push_back(int64_t(ne));
    }
    t.n_elements = elems;
    read_tensor_type(t);
    uint64_t offset = cur_.u64("data offset");
    if (offset % out_.alignment != 0)
      invalid("data offset " + num(offset) + " is not a multiple of the alignment " +
              num(out_.alignment));
    t.offset = offset;
  }

  void read_tensor_type(GgufTensorInfo& t) {
    uint32_t type_id = cur_.u32("type");
    const TypeTraits* tr = type_traits(type_id);
    if (!tr) invalid("type id " + num(type_id) + " is unknown");
    t.type = GgmlType(type_id);
    uint64_t row = 0;
    if (t.dims[0] % tr->block_elems != 0)
      invalid("row of " + snum(t.dims[0]) + " elements is not a whole number of " + tr->name +
              " blocks (" + snum(tr->block_elems) + " elements each)");
    if (!row_bytes(t.type, t.dims[0], &row))
      invalid("byte size of a row of " + snum(t.dims[0]) + " elements overflows");
    uint64_t rows = t.n_elements / uint64_t(t.dims[0]);
    if (__builtin_mul_overflow(row, rows, &t.n_bytes))
      invalid("byte size overflows (" + num(rows) + " rows of " + num(row) + " bytes)");
  }

  std::string range(const GgufTensorInfo& t) const {
    return "data [offset " + num(t.offset) + ", " + num(t.n_bytes) + " bytes]";
  }

  void check_tensor_ranges() const {
    uint64_t size = cur_.size();
    uint64_t data_size = size > out_.data_offset ? size - out_.data_offset : 0;
    for (const GgufTensorInfo& t : out_.tensors) {
      if (t.offset > data_size || t.n_bytes > data_size - t.offset)
        invalid("tensor " + quote(t.name) + ": " + range(t) + " runs past the end of the file (" +
                num(size) + " bytes, data section starts at " + num(out_.data_offset) + ")");
    }
  }

  void check_overlaps() const {
    std::vector<size_t> order(out_.tensors.size());
    std::iota(order.begin(), order.end(), size_t(0));
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return out_.tensors[a].offset < out_.tensors[b].offset ||
             (out_.tensors[a].offset == out_.tensors[b].offset && a < b);
    });
    for (size_t k = 1; k < order.size(); ++k) {
      const GgufTensorInfo& prev = out_.tensors[order[k - 1]];
      const GgufTensorInfo& t = out_.tensors[order[k]];
      if (t.offset < prev.offset + prev.n_bytes)  // both ranges lie in the file: no overflow
        invalid("tensor " + quote(t.name) + ": " + range(t) + " overlaps tensor " +
                quote(prev.name) + " " + range(prev));
    }
  }

  Cursor cur_;
  ValueReader values_;
  Parsed out_;
  uint64_t n_tensors_ = 0;
  uint64_t n_kv_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Files.

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

[[noreturn]] void os_error(const std::string& path, const char* action, int err) {
  ErrorKind kind = (err == ENOENT || err == ENOTDIR) ? ErrorKind::NotFound : ErrorKind::Io;
  fail(kind, path + ": cannot " + action + ": " + std::strerror(err));
}

// Typed accessor helpers.
[[noreturn]] void wrong_type(const std::string& file, std::string_view key, const char* expected,
                             const GgufValue& v) {
  invalid(file + ": key " + quote(key) + ": expected " + expected + ", found " + describe(v));
}

std::optional<uint64_t> as_u64(const GgufValue& v) {
  if (is_unsigned(v.type)) return v.u;
  if (is_signed(v.type) && v.i >= 0) return uint64_t(v.i);
  return std::nullopt;
}

std::optional<int64_t> as_i64(const GgufValue& v) {
  if (is_signed(v.type)) return v.i;
  if (is_unsigned(v.type) && v.u <= kInt64Max) return int64_t(v.u);
  return std::nullopt;
}

bool fits_f32(double d) { return !std::isfinite(d) || std::fabs(d) <= double(FLT_MAX); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// GgufValue

const char* gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: return "u8";
    case GgufValueType::I8: return "i8";
    case GgufValueType::U16: return "u16";
    case GgufValueType::I16: return "i16";
    case GgufValueType::U32: return "u32";
    case GgufValueType::I32: return "i32";
    case GgufValueType::F32: return "f32";
    case GgufValueType::BOOL: return "bool";
    case GgufValueType::STRING: return "string";
    case GgufValueType::ARRAY: return "array";
    case GgufValueType::U64: return "u64";
    case GgufValueType::I64: return "i64";
    case GgufValueType::F64: return "f64";
  }
  return "unknown";
}

namespace {
GgufValue make_unsigned(GgufValueType t, uint64_t x) {
  GgufValue v;
  v.type = t;
  set_unsigned(v, x);
  return v;
}
GgufValue make_signed(GgufValueType t, int64_t x) {
  GgufValue v;
  v.type = t;
  set_signed(v, x);
  return v;
}
}  // namespace

GgufValue GgufValue::make_u8(uint8_t x) { return make_unsigned(GgufValueType::U8, x); }
GgufValue GgufValue::make_i8(int8_t x) { return make_signed(GgufValueType::I8, x); }
GgufValue GgufValue::make_u16(uint16_t x) { return make_unsigned(GgufValueType::U16, x); }
GgufValue GgufValue::make_i16(int16_t x) { return make_signed(GgufValueType::I16, x); }
GgufValue GgufValue::make_u32(uint32_t x) { return make_unsigned(GgufValueType::U32, x); }
GgufValue GgufValue::make_i32(int32_t x) { return make_signed(GgufValueType::I32, x); }
GgufValue GgufValue::make_u64(uint64_t x) { return make_unsigned(GgufValueType::U64, x); }
GgufValue GgufValue::make_i64(int64_t x) { return make_signed(GgufValueType::I64, x); }
GgufValue GgufValue::make_bool(bool x) { return make_unsigned(GgufValueType::BOOL, x ? 1 : 0); }

GgufValue GgufValue::make_f32(float x) {
  GgufValue v;
  v.type = GgufValueType::F32;
  v.f = x;
  return v;
}

GgufValue GgufValue::make_f64(double x) {
  GgufValue v;
  v.type = GgufValueType::F64;
  v.f = x;
  return v;
}

GgufValue GgufValue::make_string(std::string x) {
  GgufValue v;
  v.type = GgufValueType::STRING;
  v.s = std::move(x);
  return v;
}

GgufValue GgufValue::make_array(GgufValueType elem, std::vector<GgufValue> elems) {
  GgufValue v;
  v.type = GgufValueType::ARRAY;
  v.elem_type = elem;
  v.arr = std::move(elems);
  return v;
}

// ---------------------------------------------------------------------------------------------
// GgufFile

namespace {

// [offset, offset + size) of fd, read into HugeMemory.
std::unique_ptr<HugeMemory> read_into_memory(int fd, const std::string& path, uint64_t offset,
                                             uint64_t size) {
  if (size > std::numeric_limits<size_t>::max())
    fail(ErrorKind::Io, path + ": GGUF of " + num(size) + " bytes cannot be read into memory");
  auto mem = std::make_unique<HugeMemory>(size_t(size), path);
  uint64_t done = 0;
  while (done < size) {
    const size_t want = size_t(std::min<uint64_t>(size - done, uint64_t(1) << 30));
    const ssize_t got = ::pread(fd, mem->data() + done, want, off_t(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) os_error(path, "read", errno);
    if (got == 0)
      fail(ErrorKind::Io, path + ": ended at byte " + num(offset + done) + " while reading the GGUF (" +
                              num(size) + " bytes from offset " + num(offset) + ")");
    done += uint64_t(got);
  }
  return mem;
}

}  // namespace

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path, uint64_t offset,
                                         uint64_t size, Residence where) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->name_ = path;
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) os_error(path, "open", errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) os_error(path, "stat", errno);
  if (!S_ISREG(st.st_mode)) fail(ErrorKind::Io, path + ": not a regular file");
  uint64_t file_size = uint64_t(st.st_size);
  if (offset > file_size)
    invalid(path + ": GGUF offset " + num(offset) + " lies past the end of the file (" +
            num(file_size) + " bytes)");
  if (size == 0) size = file_size - offset;
  if (size > file_size - offset)
    invalid(path + ": GGUF region [offset " + num(offset) + ", " + num(size) +
            " bytes] runs past the end of the file (" + num(file_size) + " bytes)");
  if (size == 0) {
    f->parse(nullptr, 0);  // fails: no magic
    return f;
  }
  // A copy would have to fit beside the page cache's: images larger than half the available
  // memory stay mapped (paged from the file, never running the machine out of memory).
  if (where == Residence::Memory && size <= available_memory_bytes() / 2) {
    f->memory_ = read_into_memory(fd.get(), path, offset, size);
    f->parse(f->memory_->data(), size);
    return f;
  }
  uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  uint64_t map_off = offset - offset % page;
  uint64_t delta = offset - map_off;
  if (size > std::numeric_limits<size_t>::max() - delta)
    fail(ErrorKind::Io, path + ": GGUF of " + num(size) + " bytes cannot be mapped");
  size_t map_len = size_t(size + delta);
  void* addr = ::mmap(nullptr, map_len, PROT_READ, MAP_PRIVATE, fd.get(), off_t(map_off));
  if (addr == MAP_FAILED) os_error(path, "map", errno);
  f->map_addr_ = addr;
  f->map_len_ = map_len;
  f->parse(static_cast<const uint8_t*>(addr) + delta, size);
  return f;
}

std::unique_ptr<GgufFile> GgufFile::from_memory(const void* data, size_t size, std::string name) {
  if (!data && size != 0) fail(ErrorKind::Internal, name + ": null buffer of nonzero size");
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->name_ = std::move(name);
  f->parse(static_cast<const uint8_t*>(data), size);
  return f;
}

void GgufFile::prefault() const {
#ifdef MADV_POPULATE_READ
  if (map_addr_) ::madvise(map_addr_, map_len_, MADV_POPULATE_READ);
#endif
}

GgufFile::~GgufFile() {
  if (map_addr_) ::munmap(map_addr_, map_len_);
}

void GgufFile::parse(const uint8_t* base, uint64_t size) {
  base_ = base;
  size_ = size;
  Parsed p = with_context(name_, [&] { return Parser(base, size).run(); });
  version_ = p.version;
  alignment_ = p.alignment;
  data_offset_ = p.data_offset;
  kv_ = std::move(p.kv);
  kv_index_ = std::move(p.kv_index);
  tensors_ = std::move(p.tensors);
  tensor_index_ = std::move(p.tensor_index);
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

std::optional<std::string> GgufFile::get_string_opt(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufValueType::STRING) wrong_type(name_, key, "string", *v);
  return v->s;
}

std::string GgufFile::get_string(std::string_view key) const {
  std::optional<std::string> s = get_string_opt(key);
  if (!s) invalid(name_ + ": key " + quote(key) + " is missing (expected string)");
  return *s;
}

std::optional<uint64_t> GgufFile::get_u64_opt(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (!is_unsigned(v->type) && !is_signed(v->type))
    wrong_type(name_, key, "an integer", *v);
  std::optional<uint64_t> u = as_u64(*v);
  if (!u)
    invalid(name_ + ": key " + quote(key) + ": value " + snum(v->i) +
            " does not fit in an unsigned 64-bit integer");
  return u;
}

uint64_t GgufFile::get_u64(std::string_view key) const {
  std::optional<uint64_t> u = get_u64_opt(key);
  if (!u) invalid(name_ + ": key " + quote(key) + " is missing (expected an unsigned integer)");
  return *u;
}

std::optional<int64_t> GgufFile::get_i64_opt(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (!is_unsigned(v->type) && !is_signed(v->type))
    wrong_type(name_, key, "an integer", *v);
  std::optional<int64_t> i = as_i64(*v);
  if (!i)
    invalid(name_ + ": key " + quote(key) + ": value " + num(v->u) +
            " does not fit in a signed 64-bit integer");
  return i;
}

std::optional<float> GgufFile::get_f32_opt(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufValueType::F32 && v->type != GgufValueType::F64)
    wrong_type(name_, key, "f32 or f64", *v);
  if (!fits_f32(v->f))
    invalid(name_ + ": key " + quote(key) + ": value " + std::to_string(v->f) +
            " does not fit in f32");
  return float(v->f);
}

float GgufFile::get_f32(std::string_view key) const {
  std::optional<float> f = get_f32_opt(key);
  if (!f) invalid(name_ + ": key " + quote(key) + " is missing (expected f32)");
  return *f;
}

std::optional<bool> GgufFile::get_bool_opt(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufValueType::BOOL) wrong_type(name_, key, "bool", *v);
  return v->u != 0;
}

const std::vector<GgufValue>* GgufFile::get_array(std::string_view key,
                                                  GgufValueType elem) const {
  const GgufValue* v = find(key);
  if (!v) return nullptr;
  if (v->type != GgufValueType::ARRAY || v->elem_type != elem) {
    std::string expected = std::string("array of ") + gguf_value_type_name(elem);
    wrong_type(name_, key, expected.c_str(), *v);
  }
  return &v->arr;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const uint8_t* GgufFile::tensor_data(const GgufTensorInfo& t) const {
  return base_ + data_offset_ + t.offset;
}

// ---------------------------------------------------------------------------------------------
// GgufWriter

namespace {

class Sink {
 public:
  explicit Sink(std::vector<uint8_t>& out) : out_(out) {}
  void u8(uint8_t v) { out_.push_back(v); }
  void le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(uint8_t(v >> (8 * i)));
  }
  void u32(uint32_t v) { le(v, 4); }
  void u64(uint64_t v) { le(v, 8); }
  void bytes(const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    out_.insert(out_.end(), b, b + n);
  }
  void str(const std::string& s) {
    u64(s.size());
    bytes(s.data(), s.size());
  }
  void pad_to(uint64_t align) {
    size_t rem = size_t(out_.size() % align);
    if (rem) out_.insert(out_.end(), size_t(align) - rem, uint8_t(0));
  }

 private:
  std::vector<uint8_t>& out_;
};

void check_int_range(const GgufValue& v, int64_t lo, uint64_t hi) {
  bool ok = is_unsigned(v.type) || v.type == GgufValueType::BOOL ? v.u <= hi
                                                                  : (v.i >= lo && v.i <= int64_t(hi));
  if (!ok) {
    std::string shown = is_signed(v.type) ? snum(v.i) : num(v.u);
    invalid("value " + shown + " does not fit in " + gguf_value_type_name(v.type));
  }
}

// Checks a value before it is stored: known types, element types that match, in-range numbers.
void validate_value(const GgufValue& v, int depth) {
  switch (v.type) {
    case GgufValueType::U8: return check_int_range(v, 0, 0xff);
    case GgufValueType::I8: return check_int_range(v, -128, 127);
    case GgufValueType::U16: return check_int_range(v, 0, 0xffff);
    case GgufValueType::I16: return check_int_range(v, -32768, 32767);
    case GgufValueType::U32: return check_int_range(v, 0, 0xffffffffu);
    case GgufValueType::I32: return check_int_range(v, INT32_MIN, INT32_MAX);
    case GgufValueType::BOOL: return check_int_range(v, 0, 1);
    case GgufValueType::U64: case GgufValueType::I64: case GgufValueType::F64:
    case GgufValueType::STRING: return;
    case GgufValueType::F32:
      if (!fits_f32(v.f)) invalid("value " + std::to_string(v.f) + " does not fit in f32");
      return;
    case GgufValueType::ARRAY: break;
    default: invalid("value type " + num(uint32_t(v.type)) + " is unknown");
  }
  if (depth >= kGgufMaxArrayDepth)
    invalid("arrays nested more than " + num(kGgufMaxArrayDepth) + " levels deep");
  if (!known_value_type(uint32_t(v.elem_type)))
    invalid("array element type " + num(uint32_t(v.elem_type)) + " is unknown");
  for (size_t k = 0; k < v.arr.size(); ++k) {
    with_context("element " + num(k), [&] {
      if (v.arr[k].type != v.elem_type)
        invalid(std::string("type ") + gguf_value_type_name(v.arr[k].type) +
                " in an array of " + gguf_value_type_name(v.elem_type));
      validate_value(v.arr[k], depth + 1);
    });
  }
}

void write_value(Sink& out, const GgufValue& v) {
  switch (v.type) {
    case GgufValueType::U8: case GgufValueType::BOOL: return out.le(v.u, 1);
    case GgufValueType::I8: return out.le(uint64_t(v.i), 1);
    case GgufValueType::U16: return out.le(v.u, 2);
    case GgufValueType::I16: return out.le(uint64_t(v.i), 2);
    case GgufValueType::U32: return out.le(v.u, 4);
    case GgufValueType::I32: return out.le(uint64_t(v.i), 4);
    case GgufValueType::U64: return out.le(v.u, 8);
    case GgufValueType::I64: return out.le(uint64_t(v.i), 8);
    case GgufValueType::F32: {
      float f = float(v.f);
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      return out.u32(bits);
    }
    case GgufValueType::F64: {
      uint64_t bits;
      std::memcpy(&bits, &v.f, 8);
      return out.u64(bits);
    }
    case GgufValueType::STRING: return out.str(v.s);
    case GgufValueType::ARRAY:
      out.u32(uint32_t(v.elem_type));
      out.u64(v.arr.size());
      for (const GgufValue& e : v.arr) write_value(out, e);
      return;
  }
}

uint64_t expected_tensor_bytes(GgmlType type, const std::vector<int64_t>& dims) {
  if (dims.empty() || dims.size() > kMaxDims)
    invalid("dimension count " + num(dims.size()) + " (expected 1 to " + num(kMaxDims) + ")");
  uint64_t rows = 1;
  for (size_t d = 0; d < dims.size(); ++d) {
    if (dims[d] < 1) invalid("dimension " + num(d) + " is " + snum(dims[d]) + " (expected >= 1)");
    if (d > 0 && __builtin_mul_overflow(rows, uint64_t(dims[d]), &rows))
      invalid("element count overflows");
  }
  const TypeTraits* tr = type_traits(type);
  if (!tr) invalid("type id " + num(uint32_t(type)) + " is unknown");
  uint64_t row = 0, total = 0;
  if (!row_bytes(type, dims[0], &row))
    invalid("row of " + snum(dims[0]) + " elements is not a whole number of " + tr->name +
            " blocks");
  if (__builtin_mul_overflow(row, rows, &total) ||
      __builtin_mul_overflow(rows, uint64_t(dims[0]), &rows) || rows > kInt64Max)
    invalid("byte size overflows");
  return total;
}

uint64_t writer_alignment(const std::vector<std::pair<std::string, GgufValue>>& kv) {
  for (const auto& [key, v] : kv)
    if (key == "general.alignment") return v.u;  // validated by set()
  return kGgufDefaultAlignment;
}

}  // namespace

void GgufWriter::set(std::string key, GgufValue value) {
  if (key.empty()) invalid("GGUF writer: metadata key is empty");
  with_context("GGUF writer: key " + quote(key), [&] {
    validate_value(value, 0);
    if (key == "general.alignment") {
      if (value.type != GgufValueType::U32) invalid("expected type u32, found " + describe(value));
      if (!is_pow2(value.u)) invalid("value " + num(value.u) + " is not a non-zero power of two");
    }
  });
  for (auto& [k, v] : kv_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  kv_.emplace_back(std::move(key), std::move(value));
}

void GgufWriter::add_tensor(std::string name, GgmlType type, std::vector<int64_t> dims,
                            const void* data, size_t n_bytes) {
  if (name.empty()) invalid("GGUF writer: tensor name is empty");
  with_context("GGUF writer: tensor " + quote(name), [&] {
    for (const Tensor& t : tensors_)
      if (t.name == name) invalid("name added twice");
    uint64_t expected = expected_tensor_bytes(type, dims);
    if (expected != n_bytes)
      invalid(num(n_bytes) + " bytes given, but " + num(dims.size()) + " dims of " +
              type_name(type) + " take " + num(expected) + " bytes");
    if (!data && n_bytes != 0) invalid("null data");
  });
  Tensor t{std::move(name), type, std::move(dims), {}};
  const uint8_t* b = static_cast<const uint8_t*>(data);
  t.data.assign(b, b + n_bytes);
  tensors_.push_back(std::move(t));
}

std::vector<uint8_t> GgufWriter::to_bytes() const {
  const uint64_t align = writer_alignment(kv_);
  std::vector<uint8_t> bytes;
  Sink out(bytes);
  out.bytes(kMagic, 4);
  out.u32(3);
  out.u64(tensors_.size());
  out.u64(kv_.size());
  for (const auto& [key, value] : kv_) {
    out.str(key);
    out.u32(uint32_t(value.type));
    write_value(out, value);
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    out.str(t.name);
    out.u32(uint32_t(t.dims.size()));
    for (int64_t d : t.dims) out.u64(uint64_t(d));
    out.u32(uint32_t(t.type));
    out.u64(offset);
    offset = round_up(offset + t.data.size(), align);
  }
  out.pad_to(align);
  for (const Tensor& t : tensors_) {
    out.bytes(t.data.data(), t.data.size());
    out.pad_to(align);
  }
  return bytes;
}

void GgufWriter::write_file(const std::string& path) const {
  std::vector<uint8_t> bytes = to_bytes();
  std::string tmp = path + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) os_error(tmp, "create", errno);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : EIO;
      ::unlink(tmp.c_str());
      os_error(tmp, "write", err);
    }
    done += size_t(n);
  }
  if (::fsync(fd.get()) != 0 || ::close(fd.release()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    os_error(tmp, "write", err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    os_error(path, "rename into place", err);
  }
}

}  // namespace galleon
