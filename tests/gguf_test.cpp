// GGUF reader/writer: round trips, the real test models, and hostile inputs (every check in
// docs/gguf.md has a mutation here that must trip it).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/gguf.h"
#include "tests/test_support.h"

namespace galleon {
namespace {

using Bytes = std::vector<uint8_t>;
using testing::TempDir;

// ---------------------------------------------------------------------------------------------
// Helpers

bool same_value(const GgufValue& a, const GgufValue& b) {
  if (a.type != b.type) return false;
  switch (a.type) {
    case GgufValueType::U8: case GgufValueType::U16: case GgufValueType::U32:
    case GgufValueType::U64: case GgufValueType::BOOL: return a.u == b.u;
    case GgufValueType::I8: case GgufValueType::I16: case GgufValueType::I32:
    case GgufValueType::I64: return a.i == b.i;
    case GgufValueType::F32: case GgufValueType::F64:
      return std::memcmp(&a.f, &b.f, sizeof a.f) == 0;
    case GgufValueType::STRING: return a.s == b.s;
    case GgufValueType::ARRAY:
      if (a.elem_type != b.elem_type || a.arr.size() != b.arr.size()) return false;
      for (size_t k = 0; k < a.arr.size(); ++k)
        if (!same_value(a.arr[k], b.arr[k])) return false;
      return true;
  }
  return false;
}

Bytes f32_bytes(const std::vector<float>& v) {
  Bytes b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Parses exactly `n` bytes of `img` from a heap copy of that size, so that ASan sees over-reads.
void parse_prefix(const Bytes& img, size_t n) {
  std::unique_ptr<uint8_t[]> copy(new uint8_t[n == 0 ? 1 : n]);
  if (n) std::memcpy(copy.get(), img.data(), n);
  auto f = GgufFile::from_memory(n ? copy.get() : nullptr, n, "image.gguf");
  // Touch every byte the reader vouched for.
  unsigned sum = 0;
  for (const GgufTensorInfo& t : f->tensors()) {
    const uint8_t* p = f->tensor_data(t);
    for (uint64_t k = 0; k < t.n_bytes; ++k) sum += p[k];
  }
  (void)sum;
}

std::unique_ptr<GgufFile> parse(const Bytes& img) {
  return GgufFile::from_memory(img.data(), img.size(), "image.gguf");
}

// Expects parsing `img` to fail with Error(Invalid) whose message starts with the file name and
// contains every one of `parts`.
void expect_invalid(const Bytes& img, std::vector<std::string> parts) {
  try {
    parse_prefix(img, img.size());
    ADD_FAILURE() << "parsed, expected an error containing '" << parts[0] << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Invalid) << e.message();
    EXPECT_EQ(e.message().rfind("image.gguf: ", 0), 0u) << e.message();
    for (const std::string& p : parts)
      EXPECT_NE(e.message().find(p), std::string::npos) << "'" << p << "' not in: " << e.message();
  }
}

size_t find(const Bytes& img, std::string_view s, size_t from = 0) {
  auto it = std::search(img.begin() + long(from), img.end(), s.begin(), s.end());
  if (it == img.end()) throw std::runtime_error("pattern not found: " + std::string(s));
  return size_t(it - img.begin());
}

void put_le(Bytes& img, size_t pos, uint64_t v, int n) {
  for (int k = 0; k < n; ++k) img.at(pos + size_t(k)) = uint8_t(v >> (8 * k));
}
void put_u32(Bytes& img, size_t pos, uint32_t v) { put_le(img, pos, v, 4); }
void put_u64(Bytes& img, size_t pos, uint64_t v) { put_le(img, pos, v, 8); }
uint64_t get_u64(const Bytes& img, size_t pos) {
  uint64_t v = 0;
  for (int k = 7; k >= 0; --k) v = (v << 8) | img.at(pos + size_t(k));
  return v;
}

// Field positions in the image built by small_image().
size_t key_end(const Bytes& img, std::string_view key) {
  return find(img, key) + key.size();  // the value type follows
}
struct TensorFields {
  size_t n_dims, dims, type, offset;
};
TensorFields tensor_fields(const Bytes& img, std::string_view name, uint32_t n_dims) {
  size_t p = find(img, name, 24) + name.size();
  // Skip metadata occurrences of the name: the tensor info is the last occurrence.
  while (true) {
    try {
      size_t q = find(img, name, p) + name.size();
      p = q;
    } catch (const std::runtime_error&) {
      break;
    }
  }
  return {p, p + 4, p + 4 + 8 * n_dims, p + 8 + 8 * n_dims};
}

// A small valid file with every feature the attacks need.
GgufWriter small_writer() {
  GgufWriter w;
  w.set("general.architecture", GgufValue::make_string("llama"));
  w.set("general.alignment", GgufValue::make_u32(32));
  w.set("test.u32", GgufValue::make_u32(7));
  w.set("test.arr", GgufValue::make_array(GgufValueType::I32,
                                          {GgufValue::make_i32(1), GgufValue::make_i32(-2)}));
  w.set("test.strs", GgufValue::make_array(GgufValueType::STRING, {GgufValue::make_string("a"),
                                                                   GgufValue::make_string("bc")}));
  w.set("test.flag", GgufValue::make_bool(true));
  std::vector<float> a(8), b(8);
  for (int k = 0; k < 8; ++k) a[size_t(k)] = float(k), b[size_t(k)] = float(-k);
  Bytes ab = f32_bytes(a), bb = f32_bytes(b);
  w.add_tensor("tok.weight", GgmlType::F32, {4, 2}, ab.data(), ab.size());
  w.add_tensor("out.weight", GgmlType::F32, {8}, bb.data(), bb.size());
  Bytes q(34, 0x11);
  w.add_tensor("q.weight", GgmlType::Q8_0, {32, 1}, q.data(), q.size());
  return w;
}
Bytes small_image() { return small_writer().to_bytes(); }

// Little-endian image assembly for inputs the writer refuses to make.
struct Img {
  Bytes b;
  Img& u32(uint32_t v) {
    for (int k = 0; k < 4; ++k) b.push_back(uint8_t(v >> (8 * k)));
    return *this;
  }
  Img& u64(uint64_t v) {
    for (int k = 0; k < 8; ++k) b.push_back(uint8_t(v >> (8 * k)));
    return *this;
  }
  Img& str(std::string_view s) {
    u64(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Img& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b = {'G', 'G', 'U', 'F'};
    return u32(version).u64(n_tensors).u64(n_kv);
  }
};

// ---------------------------------------------------------------------------------------------
// Round trips

GgufValue every_type_array() {
  using T = GgufValueType;
  auto strs = GgufValue::make_array(T::STRING, {GgufValue::make_string("x"),
                                                GgufValue::make_string(std::string("\xff\x00z", 3))});
  auto inner = GgufValue::make_array(T::ARRAY, {strs, GgufValue::make_array(T::STRING, {})});
  return GgufValue::make_array(T::ARRAY, {inner, GgufValue::make_array(T::ARRAY, {})});
}

std::vector<std::pair<std::string, GgufValue>> every_value() {
  using T = GgufValueType;
  return {
      {"v.u8", GgufValue::make_u8(250)},
      {"v.i8", GgufValue::make_i8(-120)},
      {"v.u16", GgufValue::make_u16(65000)},
      {"v.i16", GgufValue::make_i16(-32000)},
      {"v.u32", GgufValue::make_u32(4000000000u)},
      {"v.i32", GgufValue::make_i32(-2000000000)},
      {"v.f32", GgufValue::make_f32(-0.0f)},
      {"v.f32inf", GgufValue::make_f32(std::numeric_limits<float>::infinity())},
      {"v.bool", GgufValue::make_bool(true)},
      {"v.bool0", GgufValue::make_bool(false)},
      {"v.string", GgufValue::make_string(std::string("bytes \xc3\x28 not utf-8 \0 nul", 25))},
      {"v.empty", GgufValue::make_string("")},
      {"v.u64", GgufValue::make_u64(std::numeric_limits<uint64_t>::max())},
      {"v.i64", GgufValue::make_i64(std::numeric_limits<int64_t>::min())},
      {"v.f64", GgufValue::make_f64(1.0 / 3.0)},
      {"a.u8", GgufValue::make_array(T::U8, {GgufValue::make_u8(0), GgufValue::make_u8(255)})},
      {"a.i8", GgufValue::make_array(T::I8, {GgufValue::make_i8(-128)})},
      {"a.u16", GgufValue::make_array(T::U16, {GgufValue::make_u16(1)})},
      {"a.i16", GgufValue::make_array(T::I16, {GgufValue::make_i16(-1)})},
      {"a.u32", GgufValue::make_array(T::U32, {GgufValue::make_u32(3)})},
      {"a.i32", GgufValue::make_array(T::I32, {GgufValue::make_i32(-3), GgufValue::make_i32(3)})},
      {"a.f32", GgufValue::make_array(T::F32, {GgufValue::make_f32(0.5f)})},
      {"a.bool", GgufValue::make_array(T::BOOL, {GgufValue::make_bool(false)})},
      {"a.string", GgufValue::make_array(T::STRING, {GgufValue::make_string("hi")})},
      {"a.u64", GgufValue::make_array(T::U64, {GgufValue::make_u64(1ull << 63)})},
      {"a.i64", GgufValue::make_array(T::I64, {GgufValue::make_i64(-5)})},
      {"a.f64", GgufValue::make_array(T::F64, {GgufValue::make_f64(-2.5)})},
      {"a.empty", GgufValue::make_array(T::U32, {})},
      {"a.nested", every_type_array()},
  };
}

TEST(GgufRoundTrip, EveryValueType) {
  GgufWriter w;
  auto values = every_value();
  for (const auto& [k, v] : values) w.set(k, v);
  Bytes img = w.to_bytes();
  auto f = parse(img);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  ASSERT_EQ(f->metadata().size(), values.size());
  for (size_t k = 0; k < values.size(); ++k) {
    EXPECT_EQ(f->metadata()[k].first, values[k].first);
    EXPECT_TRUE(same_value(f->metadata()[k].second, values[k].second)) << values[k].first;
  }
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_EQ(f->data_offset() % 32, 0u);
  EXPECT_EQ(img.size() % 32, 0u);
  // Writing what was read gives the same bytes.
  GgufWriter again;
  for (const auto& [k, v] : f->metadata()) again.set(k, v);
  EXPECT_EQ(again.to_bytes(), img);
}

TEST(GgufRoundTrip, TensorsAndDeterminism) {
  GgufWriter w = small_writer();
  Bytes img = w.to_bytes();
  EXPECT_EQ(small_writer().to_bytes(), img);
  EXPECT_EQ(w.to_bytes(), img);
  auto f = parse(img);
  ASSERT_EQ(f->tensors().size(), 3u);
  const GgufTensorInfo* t = f->find_tensor("tok.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dims, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(t->type, GgmlType::F32);
  EXPECT_EQ(t->n_elements, 8u);
  EXPECT_EQ(t->n_bytes, 32u);
  float x[8];
  std::memcpy(x, f->tensor_data(*t), 32);
  EXPECT_EQ(x[5], 5.0f);
  const GgufTensorInfo* q = f->find_tensor("q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->n_bytes, 34u);
  EXPECT_EQ(q->offset % 32, 0u);
  EXPECT_EQ(f->tensor_data(*q)[33], 0x11);
  EXPECT_EQ(f->find_tensor("missing"), nullptr);
  // Tensor data is aligned in the image; padding is zero.
  EXPECT_EQ(f->data_offset() % 32, 0u);
  for (size_t k = size_t(f->data_offset() + q->offset + 34); k < img.size(); ++k)
    EXPECT_EQ(img[k], 0) << k;
}

TEST(GgufRoundTrip, CustomAlignment) {
  GgufWriter w = small_writer();
  w.set("general.alignment", GgufValue::make_u32(64));  // replaced in place
  Bytes img = w.to_bytes();
  auto f = parse(img);
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->metadata()[1].first, "general.alignment");
  EXPECT_EQ(f->data_offset() % 64, 0u);
  for (const GgufTensorInfo& t : f->tensors()) EXPECT_EQ(t.offset % 64, 0u) << t.name;
  EXPECT_EQ(img.size() % 64, 0u);
}

TEST(GgufRoundTrip, Version2IsRead) {
  Bytes img = small_image();
  put_u32(img, 4, 2);
  EXPECT_EQ(parse(img)->version(), 2u);
}

TEST(GgufRoundTrip, KnownButNotRunnableTypeIsRead) {
  Bytes img = small_image();
  auto tf = tensor_fields(img, "out.weight", 1);
  put_u32(img, tf.type, uint32_t(GgmlType::I32));  // 8 x i32 = 32 bytes, same as 8 x f32
  auto f = parse(img);
  EXPECT_EQ(f->find_tensor("out.weight")->type, GgmlType::I32);
}

// ---------------------------------------------------------------------------------------------
// Files

TEST(GgufFileIo, WriteFileThenOpenMapsSameBytes) {
  TempDir dir;
  std::string path = dir.file("m.gguf");
  small_writer().write_file(path);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  Bytes img = small_image();
  EXPECT_EQ(testing::read_file(path), std::string(img.begin(), img.end()));
  auto f = GgufFile::open(path);
  EXPECT_EQ(f->name(), path);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  const GgufTensorInfo* t = f->find_tensor("out.weight");
  float x[8];
  std::memcpy(x, f->tensor_data(*t), 32);
  EXPECT_EQ(x[7], -7.0f);
}

// Both residences: the file's pages mapped, and the image read into (huge-page) memory.
TEST(GgufFileIo, OpenEmbeddedAtOffset) {
  TempDir dir;
  std::string path = dir.file("bundle.bin");
  Bytes img = small_image();
  for (Residence where : {Residence::Mapped, Residence::Memory})
    for (uint64_t offset : {uint64_t(512), uint64_t(4096 + 100)}) {
      std::string bytes(size_t(offset), 'x');
      bytes.append(img.begin(), img.end());
      bytes.append(777, 'y');
      testing::write_file(path, bytes);
      auto f = GgufFile::open(path, offset, img.size(), where);
      EXPECT_EQ(f->tensors().size(), 3u);
      EXPECT_EQ(f->tensor_data(*f->find_tensor("q.weight"))[0], 0x11);
      const GgufTensorInfo* t = f->find_tensor("out.weight");
      EXPECT_EQ(0, std::memcmp(f->tensor_data(*t), img.data() + f->data_offset() + t->offset, 32));
      // Without a size the trailing bytes belong to the image (allowed after the data).
      EXPECT_EQ(GgufFile::open(path, offset, 0, where)->tensors().size(), 3u);
      try {
        GgufFile::open(path, offset, bytes.size(), where);
        ADD_FAILURE() << "region past the end accepted";
      } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::Invalid);
        EXPECT_NE(e.message().find(path), std::string::npos) << e.message();
      }
    }
}

// Read into memory, the image is the bytes of the moment it was opened: a later write to the
// file changes nothing of it.
TEST(GgufFileIo, MemoryResidenceIsASnapshot) {
  TempDir dir;
  std::string path = dir.file("m.gguf");
  small_writer().write_file(path);
  auto f = GgufFile::open(path, 0, 0, Residence::Memory);
  const GgufTensorInfo* t = f->find_tensor("q.weight");
  const uint8_t before = f->tensor_data(*t)[0];
  std::string bytes = testing::read_file(path);
  bytes[size_t(f->data_offset() + t->offset)] = char(before ^ 0xff);
  {
    std::fstream out(path, std::ios::in | std::ios::out | std::ios::binary);
    out.write(bytes.data(), std::streamsize(bytes.size()));
  }
  EXPECT_EQ(f->tensor_data(*t)[0], before);
  EXPECT_NE(GgufFile::open(path, 0, 0, Residence::Memory)->tensor_data(*t)[0], before);
}

TEST(GgufFileIo, MissingFileIsNotFound) {
  TempDir dir;
  std::string path = dir.file("absent.gguf");
  try {
    GgufFile::open(path);
    FAIL() << "opened a missing file";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::NotFound);
    EXPECT_EQ(e.message().rfind(path, 0), 0u) << e.message();
  }
}

TEST(GgufFileIo, DirectoryAndEmptyFile) {
  TempDir dir;
  for (Residence where : {Residence::Mapped, Residence::Memory}) {
    try {
      GgufFile::open(dir.path().string(), 0, 0, where);
      ADD_FAILURE() << "opened a directory";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Io);
    }
    std::string empty = dir.file("empty.gguf");
    testing::write_file(empty, "");
    try {
      GgufFile::open(empty, 0, 0, where);
      ADD_FAILURE() << "parsed an empty file";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Invalid);
      EXPECT_NE(e.message().find("magic"), std::string::npos) << e.message();
    }
    // A truncated image: an error naming the file, whichever residence.
    std::string cut = dir.file("cut.gguf");
    Bytes img = small_image();
    testing::write_file(cut, std::string(img.begin(), img.begin() + long(img.size() / 2)));
    try {
      GgufFile::open(cut, 0, 0, where);
      ADD_FAILURE() << "parsed a truncated file";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Invalid);
      EXPECT_NE(e.message().find(cut), std::string::npos) << e.message();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Typed accessors

TEST(GgufAccessors, IntegersFloatsBoolsArrays) {
  GgufWriter w;
  w.set("i32", GgufValue::make_i32(64));
  w.set("neg", GgufValue::make_i32(-1));
  w.set("big", GgufValue::make_u64(std::numeric_limits<uint64_t>::max()));
  w.set("f64", GgufValue::make_f64(0.25));
  w.set("huge", GgufValue::make_f64(1e300));
  w.set("s", GgufValue::make_string("str"));
  w.set("b", GgufValue::make_bool(true));
  w.set("arr", GgufValue::make_array(GgufValueType::U8, {GgufValue::make_u8(9)}));
  Bytes img = w.to_bytes();
  auto f = parse(img);
  EXPECT_EQ(f->get_u64("i32"), 64u);
  EXPECT_EQ(f->get_i64_opt("neg"), -1);
  EXPECT_EQ(f->get_u64("big"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(f->get_f32("f64"), 0.25f);
  EXPECT_EQ(f->get_bool_opt("b"), true);
  EXPECT_EQ(f->get_bool_opt("nope"), std::nullopt);
  EXPECT_EQ(f->get_u64_opt("nope"), std::nullopt);
  EXPECT_EQ(f->get_string_opt("nope"), std::nullopt);
  EXPECT_EQ(f->get_array("nope", GgufValueType::U8), nullptr);
  ASSERT_NE(f->get_array("arr", GgufValueType::U8), nullptr);
  EXPECT_EQ(f->get_array("arr", GgufValueType::U8)->at(0).u, 9u);

  auto expect_err = [&](auto fn, std::vector<std::string> parts) {
    try {
      fn();
      ADD_FAILURE() << "no error for " << parts[0];
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Invalid);
      EXPECT_EQ(e.message().rfind("image.gguf: ", 0), 0u) << e.message();
      for (const auto& p : parts) EXPECT_NE(e.message().find(p), std::string::npos) << e.message();
    }
  };
  expect_err([&] { f->get_u64("neg"); }, {"'neg'", "-1"});
  expect_err([&] { f->get_i64_opt("big"); }, {"'big'", "signed"});
  expect_err([&] { f->get_u64("s"); }, {"'s'", "integer", "string"});
  expect_err([&] { f->get_u64("missing.key"); }, {"'missing.key'", "missing"});
  expect_err([&] { f->get_string("i32"); }, {"'i32'", "expected string", "i32"});
  expect_err([&] { f->get_string("missing.key"); }, {"'missing.key'", "missing"});
  expect_err([&] { f->get_f32("s"); }, {"'s'", "f32"});
  expect_err([&] { f->get_f32("huge"); }, {"'huge'", "f32"});
  expect_err([&] { f->get_bool_opt("i32"); }, {"'i32'", "bool"});
  expect_err([&] { f->get_array("arr", GgufValueType::U32); }, {"'arr'", "array of u32", "array of u8"});
  expect_err([&] { f->get_array("s", GgufValueType::STRING); }, {"'s'", "array of string"});
}

// ---------------------------------------------------------------------------------------------
// Writer checks

TEST(GgufWriterChecks, RejectsBadInput) {
  auto expect_err = [](auto fn, const std::string& part) {
    try {
      fn();
      ADD_FAILURE() << "no error for " << part;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Invalid);
      EXPECT_NE(e.message().find(part), std::string::npos) << e.message();
    }
  };
  GgufWriter w;
  float x[8] = {};
  expect_err([&] { w.add_tensor("t", GgmlType::F32, {4, 2}, x, 28); }, "take 32 bytes");
  expect_err([&] { w.add_tensor("t", GgmlType::F32, {0}, x, 0); }, "dimension 0");
  expect_err([&] { w.add_tensor("t", GgmlType::F32, {1, 1, 1, 1, 1}, x, 4); }, "dimension count");
  expect_err([&] { w.add_tensor("t", GgmlType::Q4_0, {16}, x, 9); }, "q4_0 blocks");
  expect_err([&] { w.add_tensor("t", GgmlType(99), {1}, x, 4); }, "unknown");
  expect_err([&] { w.add_tensor("", GgmlType::F32, {1}, x, 4); }, "empty");
  w.add_tensor("t", GgmlType::F32, {8}, x, 32);
  expect_err([&] { w.add_tensor("t", GgmlType::F32, {8}, x, 32); }, "twice");
  expect_err([&] { w.set("general.alignment", GgufValue::make_i32(32)); }, "u32");
  expect_err([&] { w.set("general.alignment", GgufValue::make_u32(48)); }, "power of two");
  expect_err([&] { w.set("", GgufValue::make_u32(1)); }, "empty");
  GgufValue bad_u8 = GgufValue::make_u8(1);
  bad_u8.u = 300;
  expect_err([&] { w.set("k", bad_u8); }, "does not fit in u8");
  expect_err([&] { w.set("k", GgufValue::make_array(GgufValueType::U8, {GgufValue::make_i8(1)})); },
             "element 0");
  GgufValue deep = GgufValue::make_array(GgufValueType::U8, {});
  for (int k = 0; k < kGgufMaxArrayDepth; ++k) deep = GgufValue::make_array(GgufValueType::ARRAY, {deep});
  expect_err([&] { w.set("k", deep); }, "nested");
}

// ---------------------------------------------------------------------------------------------
// Real files

TEST(GgufRealFiles, Stories260K) {
  std::string path = testing::shared_path("models/stories260K/stories260K.gguf");
  GALLEON_REQUIRE_SHARED(path);
  auto f = GgufFile::open(path);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_u64("llama.embedding_length"), 64u);
  EXPECT_EQ(f->get_u64("llama.block_count"), 5u);
  EXPECT_EQ(f->metadata().size(), 19u);
  EXPECT_EQ(f->tensors().size(), 48u);
  const GgufTensorInfo* t = f->find_tensor("token_embd.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dims, (std::vector<int64_t>{64, 512}));
  EXPECT_EQ(t->type, GgmlType::F32);
  EXPECT_EQ(t->n_bytes, 64u * 512u * 4u);
  const auto* tokens = f->get_array("tokenizer.ggml.tokens", GgufValueType::STRING);
  ASSERT_NE(tokens, nullptr);
  EXPECT_EQ(tokens->size(), 512u);
  EXPECT_EQ(tokens->at(0).s, "<unk>");
  uint64_t end = 0;
  for (const GgufTensorInfo& x : f->tensors()) {
    EXPECT_EQ(x.type, GgmlType::F32) << x.name;
    end = std::max(end, f->data_offset() + x.offset + x.n_bytes);
  }
  EXPECT_LE(end, std::filesystem::file_size(path));
  // The bytes are the file's bytes.
  std::string raw = testing::read_file(path);
  EXPECT_EQ(std::memcmp(f->tensor_data(*t), raw.data() + f->data_offset() + t->offset, 256), 0);
  // Re-writing what was read reproduces the file exactly (llama.cpp pads the same way).
  GgufWriter w;
  for (const auto& [k, v] : f->metadata()) w.set(k, v);
  for (const GgufTensorInfo& x : f->tensors())
    w.add_tensor(x.name, x.type, x.dims, f->tensor_data(x), size_t(x.n_bytes));
  Bytes again = w.to_bytes();
  EXPECT_EQ(again.size(), raw.size());
  EXPECT_TRUE(again.size() == raw.size() && std::memcmp(again.data(), raw.data(), raw.size()) == 0);
}

TEST(GgufRealFiles, VocabOnly) {
  for (const char* name : {"ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-spm.gguf",
                           "ggml-vocab-phi-3.gguf"}) {
    std::string path = testing::shared_path(std::string("vocab/") + name);
    GALLEON_REQUIRE_SHARED(path);
    auto f = GgufFile::open(path);
    EXPECT_TRUE(f->tensors().empty()) << name;
    EXPECT_FALSE(f->get_string("tokenizer.ggml.model").empty()) << name;
    const auto* tokens = f->get_array("tokenizer.ggml.tokens", GgufValueType::STRING);
    ASSERT_NE(tokens, nullptr) << name;
    EXPECT_GT(tokens->size(), 1000u) << name;
  }
}

// ---------------------------------------------------------------------------------------------
// Hostile inputs: one mutation per check.

TEST(GgufHostile, BaseImageIsValid) { EXPECT_NO_THROW(parse_prefix(small_image(), small_image().size())); }

TEST(GgufHostile, Header) {
  Bytes base = small_image();
  Bytes img = base;
  img[0] = 'X';
  expect_invalid(img, {"header", "magic"});
  img = base;
  put_u32(img, 4, 1);
  expect_invalid(img, {"version 1", "not supported"});
  put_u32(img, 4, 99);
  expect_invalid(img, {"unknown version 99"});
  put_u32(img, 4, 0x03000000u);
  expect_invalid(img, {"big-endian"});
  img = base;
  put_u64(img, 8, 1ull << 40);
  expect_invalid(img, {"header", "tensor count 1099511627776"});
  put_u64(img, 8, std::numeric_limits<uint64_t>::max());
  expect_invalid(img, {"tensor count"});
  img = base;
  put_u64(img, 16, std::numeric_limits<uint64_t>::max());
  expect_invalid(img, {"header", "metadata count"});
  put_u64(img, 16, 1ull << 60);
  expect_invalid(img, {"metadata count"});
  // Tensor count raised by one: the would-be extra tensor info is read from the padding/data.
  img = base;
  put_u64(img, 8, get_u64(base, 8) + 1);
  expect_invalid(img, {"tensor"});
}

TEST(GgufHostile, Keys) {
  Bytes base = small_image();
  Bytes img = base;
  put_u64(img, 24, std::numeric_limits<uint64_t>::max());  // first key length
  expect_invalid(img, {"metadata entry 0", "key", "length"});
  img = base;
  put_u64(img, 24, 0);
  expect_invalid(img, {"metadata entry 0", "key is empty"});
  img = base;
  size_t p = find(img, "test.arr");
  std::memcpy(&img[p], "test.u32", 8);
  expect_invalid(img, {"'test.u32'", "appears twice"});
  img = base;
  put_u32(img, key_end(img, "test.u32"), 13);
  expect_invalid(img, {"'test.u32'", "value type 13"});
  img = base;
  put_u32(img, key_end(img, "test.u32"), 0x80000009u);
  expect_invalid(img, {"'test.u32'", "value type"});
}

TEST(GgufHostile, Values) {
  Bytes base = small_image();
  Bytes img = base;
  size_t p = key_end(img, "general.architecture") + 4;  // string length
  put_u64(img, p, 1ull << 62);
  expect_invalid(img, {"'general.architecture'", "length 4611686018427387904"});
  put_u64(img, p, std::numeric_limits<uint64_t>::max());
  expect_invalid(img, {"'general.architecture'", "length"});
  img = base;
  p = key_end(img, "test.arr") + 4;  // element type, then count
  put_u64(img, p + 4, 1ull << 61);
  expect_invalid(img, {"'test.arr'", "array length 2305843009213693952", "cannot fit"});
  put_u64(img, p + 4, std::numeric_limits<uint64_t>::max());
  expect_invalid(img, {"'test.arr'", "array length", "cannot fit"});
  put_u64(img, p + 4, 1000);  // below every limit but the bytes left
  expect_invalid(img, {"'test.arr'", "array length 1000 of i32 cannot fit"});
  img = base;
  put_u32(img, p, 77);
  expect_invalid(img, {"'test.arr'", "array element type 77"});
  img = base;
  p = key_end(img, "test.strs") + 4 + 4 + 8;  // first element's length
  put_u64(img, p, 1000000);
  expect_invalid(img, {"'test.strs'", "element 0", "length 1000000"});
  img = base;
  img[key_end(img, "test.flag") + 4] = 2;
  expect_invalid(img, {"'test.flag'", "bool value 2"});
  img = base;
  put_u32(img, key_end(img, "test.u32"), 12);  // u32 read as f64: swallows following bytes
  expect_invalid(img, {"image.gguf: "});
}

TEST(GgufHostile, Alignment) {
  Bytes base = small_image();
  size_t type_at = key_end(base, "general.alignment");
  Bytes img = base;
  put_u32(img, type_at, uint32_t(GgufValueType::I32));
  expect_invalid(img, {"'general.alignment'", "expected type u32, found i32"});
  for (uint32_t bad : {0u, 48u, 33u, 0x80000001u}) {
    img = base;
    put_u32(img, type_at + 4, bad);
    expect_invalid(img, {"'general.alignment'", "power of two"});
  }
  // A valid but larger alignment puts tensors off their grid... or the data past the end.
  img = base;
  put_u32(img, type_at + 4, 1u << 30);
  expect_invalid(img, {"tensor"});
}

TEST(GgufHostile, TensorInfos) {
  Bytes base = small_image();
  auto tok = tensor_fields(base, "tok.weight", 2);
  auto out = tensor_fields(base, "out.weight", 1);
  auto q = tensor_fields(base, "q.weight", 2);
  Bytes img = base;
  put_u32(img, tok.n_dims, 5);
  expect_invalid(img, {"'tok.weight'", "dimension count 5"});
  put_u32(img, tok.n_dims, 0);
  expect_invalid(img, {"'tok.weight'", "dimension count 0"});
  put_u32(img, tok.n_dims, 0xffffffffu);
  expect_invalid(img, {"'tok.weight'", "dimension count"});
  img = base;
  put_u64(img, tok.dims, 0);
  expect_invalid(img, {"'tok.weight'", "dimension 0 is 0"});
  img = base;
  put_u64(img, tok.dims + 8, 1ull << 63);
  expect_invalid(img, {"'tok.weight'", "dimension 1", "INT64_MAX"});
  img = base;
  put_u64(img, tok.dims, 1ull << 32);
  put_u64(img, tok.dims + 8, 1ull << 31);
  expect_invalid(img, {"'tok.weight'", "element count overflows"});
  img = base;
  put_u64(img, tok.dims, 1ull << 62);  // elements fit in int64, bytes do not fit in uint64
  put_u64(img, tok.dims + 8, 1);
  expect_invalid(img, {"'tok.weight'", "overflows"});
  img = base;
  put_u32(img, tok.type, 99);
  expect_invalid(img, {"'tok.weight'", "type id 99 is unknown"});
  put_u32(img, tok.type, 4);  // removed from ggml (q4_2)
  expect_invalid(img, {"'tok.weight'", "type id 4"});
  img = base;
  put_u64(img, q.dims, 16);
  expect_invalid(img, {"'q.weight'", "16 elements", "q8_0 blocks"});
  img = base;
  size_t name_len_at = find(img, "out.weight", tok.offset) - 8;
  put_u64(img, name_len_at, 0);
  expect_invalid(img, {"tensor info 1", "tensor name is empty"});
  put_u64(img, name_len_at, std::numeric_limits<uint64_t>::max() - 3);
  expect_invalid(img, {"tensor info 1", "tensor name", "length"});
  img = base;
  std::memcpy(&img[out.n_dims - 10], "tok.weight", 10);
  expect_invalid(img, {"'tok.weight'", "appears twice"});
}

TEST(GgufHostile, TensorData) {
  Bytes base = small_image();
  auto out = tensor_fields(base, "out.weight", 1);
  uint64_t off = get_u64(base, out.offset);
  Bytes img = base;
  put_u64(img, out.offset, off + 4);
  expect_invalid(img, {"'out.weight'", "data offset", "not a multiple of the alignment 32"});
  img = base;
  put_u64(img, out.offset, 1024);
  expect_invalid(img, {"'out.weight'", "data [offset 1024, 32 bytes] runs past the end of the file"});
  put_u64(img, out.offset, std::numeric_limits<uint64_t>::max() - 31);
  expect_invalid(img, {"'out.weight'", "runs past the end"});
  img = base;
  put_u64(img, out.offset, 0);
  expect_invalid(img, {"'out.weight'", "overlaps tensor 'tok.weight'"});
  // Growing a tensor so that it reaches into the next one.
  img = base;
  put_u64(img, out.dims, 16);
  expect_invalid(img, {"'q.weight'", "overlaps tensor 'out.weight'"});
  // Cutting the file inside the last tensor.
  img = base;
  img.erase(img.end() - 32, img.end());
  expect_invalid(img, {"'q.weight'", "runs past the end of the file"});
}

TEST(GgufHostile, NestingDepthLimit) {
  auto nested = [](int levels) {
    Img m;
    m.header(0, 1).str("deep").u32(uint32_t(GgufValueType::ARRAY));
    for (int k = 1; k < levels; ++k) m.u32(uint32_t(GgufValueType::ARRAY)).u64(1);
    m.u32(uint32_t(GgufValueType::U8)).u64(1);
    m.b.push_back(7);
    return m.b;
  };
  auto f = parse(nested(kGgufMaxArrayDepth));
  const GgufValue* v = f->find("deep");
  for (int k = 1; k < kGgufMaxArrayDepth; ++k) v = &v->arr.at(0);
  EXPECT_EQ(v->arr.at(0).u, 7u);
  expect_invalid(nested(kGgufMaxArrayDepth + 1), {"'deep'", "nested more than 8"});
  // A long chain is refused at the limit, without recursion to the end.
  Img m;
  m.header(0, 1).str("deep").u32(uint32_t(GgufValueType::ARRAY));
  for (int k = 0; k < 100000; ++k) m.u32(uint32_t(GgufValueType::ARRAY)).u64(1);
  expect_invalid(m.b, {"nested"});
}

TEST(GgufHostile, ElementBudget) {
  // An array whose bytes are all there but whose element count is above the per-file limit is
  // refused before its elements are stored (each would take a GgufValue).
  Img m;
  uint64_t count = kGgufMaxMetadataValues + 1;
  m.header(0, 1).str("big").u32(uint32_t(GgufValueType::ARRAY)).u32(uint32_t(GgufValueType::U8));
  m.u64(count);
  m.b.resize(m.b.size() + count, 0);
  expect_invalid(m.b, {"'big'", "limit"});
}

TEST(GgufHostile, HugeCountsDoNotAllocate) {
  // Counts near 2^64 in a 40-byte file: rejected by arithmetic, before any allocation.
  Img m;
  m.header(0, 1).str("k").u32(uint32_t(GgufValueType::ARRAY)).u32(uint32_t(GgufValueType::ARRAY));
  m.u64(std::numeric_limits<uint64_t>::max() / 12);
  expect_invalid(m.b, {"'k'", "array length", "cannot fit"});
  Img s;
  s.header(0, 1).str("k").u32(uint32_t(GgufValueType::STRING)).u64(std::numeric_limits<uint64_t>::max());
  expect_invalid(s.b, {"'k'", "length"});
}

TEST(GgufHostile, TruncationAtEveryOffset) {
  Bytes img = small_image();
  auto full = parse(img);
  uint64_t data_end = 0;
  for (const GgufTensorInfo& t : full->tensors())
    data_end = std::max(data_end, full->data_offset() + t.offset + t.n_bytes);
  ASSERT_LT(data_end, img.size());
  for (size_t n = 0; n < img.size(); ++n) {
    if (n >= data_end) {
      EXPECT_NO_THROW(parse_prefix(img, n)) << n;  // only trailing padding is missing
      continue;
    }
    try {
      parse_prefix(img, n);
      ADD_FAILURE() << "prefix of " << n << " bytes parsed";
    } catch (const Error& e) {
      ASSERT_EQ(e.kind(), ErrorKind::Invalid) << n << ": " << e.message();
      ASSERT_EQ(e.message().rfind("image.gguf: ", 0), 0u) << e.message();
    }
  }
}

// xorshift64*: a fixed sequence on every platform.
struct Rng {
  uint64_t s;
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  uint64_t below(uint64_t n) { return next() % n; }
};

TEST(GgufHostile, RandomCorruptionNeverCrashes) {
  const Bytes base = small_image();
  const uint64_t specials[] = {0, 1, 0xff, 0x7fffffffffffffffull, 0x8000000000000000ull,
                               0xffffffffffffffffull, 1ull << 32, 31, 32, 33};
  Rng rng{0x9e3779b97f4a7c15ull};
  int parsed = 0, failed = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    Bytes img = base;
    int edits = 1 + int(rng.below(4));
    for (int e = 0; e < edits; ++e) {
      size_t at = size_t(rng.below(img.size()));
      switch (rng.below(3)) {
        case 0: img[at] = uint8_t(rng.next()); break;
        case 1: img[at] ^= uint8_t(1u << rng.below(8)); break;
        default:
          if (at + 8 <= img.size()) put_u64(img, at, specials[rng.below(std::size(specials))]);
      }
    }
    if (rng.below(8) == 0) img.resize(size_t(rng.below(img.size())));
    try {
      parse_prefix(img, img.size());
      ++parsed;
    } catch (const Error& e) {
      ASSERT_EQ(e.kind(), ErrorKind::Invalid) << iter << ": " << e.message();
      ++failed;
    }
  }
  EXPECT_GT(failed, 1000);
  EXPECT_GT(parsed, 10);  // some edits hit tensor data or padding
}

// ---------------------------------------------------------------------------------------------
// Fuzzing seed corpus (fuzz/corpus/gguf/): made here so it stays in step with the writer.
// GALLEON_WRITE_FUZZ_CORPUS=<folder> writes the files.

std::vector<std::pair<std::string, Bytes>> seed_corpus() {
  GgufWriter w;
  for (const auto& [k, v] : every_value()) w.set(k, v);
  GgufWriter v2 = small_writer();
  Bytes v2img = v2.to_bytes();
  put_u32(v2img, 4, 2);
  return {{"small.gguf", small_image()}, {"values.gguf", w.to_bytes()}, {"small_v2.gguf", v2img}};
}

TEST(GgufFuzzCorpus, SeedsAreSmallAndValid) {
  const char* dir = std::getenv("GALLEON_WRITE_FUZZ_CORPUS");
  for (const auto& [name, img] : seed_corpus()) {
    EXPECT_LT(img.size(), 4096u) << name;
    EXPECT_NO_THROW(parse(img)) << name;
    if (dir) {
      std::string path = std::string(dir) + "/" + name;
      testing::write_file(path, std::string(img.begin(), img.end()));
    }
  }
}

}  // namespace
}  // namespace galleon
