// GGUF v2/v3 reader (every field treated as hostile) and a deterministic writer.
// Format and the checks made: docs/gguf.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "runtime/ggml_type.h"
#include "runtime/huge_memory.h"

namespace galleon {

enum class GgufValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8,
  ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};
const char* gguf_value_type_name(GgufValueType t);

// A metadata value. Arrays hold elements of one type (nested arrays allowed).
struct GgufValue {
  GgufValueType type = GgufValueType::U8;
  GgufValueType elem_type = GgufValueType::U8;  // for ARRAY
  // Scalars: integers in i/u, floats in f, bool in u (0/1), string in s.
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  std::string s;
  std::vector<GgufValue> arr;  // ARRAY elements (strings and numbers alike)

  static GgufValue make_u32(uint32_t v);
  static GgufValue make_i32(int32_t v);
  static GgufValue make_u64(uint64_t v);
  static GgufValue make_f32(float v);
  static GgufValue make_bool(bool v);
  static GgufValue make_string(std::string v);
  static GgufValue make_array(GgufValueType elem, std::vector<GgufValue> elems);
  // The remaining scalar types (added for completeness; same conventions as above).
  static GgufValue make_u8(uint8_t v);
  static GgufValue make_i8(int8_t v);
  static GgufValue make_u16(uint16_t v);
  static GgufValue make_i16(int16_t v);
  static GgufValue make_i64(int64_t v);
  static GgufValue make_f64(double v);
};

// Reader limits beyond the format itself (docs/gguf.md).
inline constexpr uint64_t kGgufDefaultAlignment = 32;
inline constexpr int kGgufMaxArrayDepth = 8;                // arrays nested in arrays
inline constexpr uint64_t kGgufMaxMetadataValues = 1u << 23;  // all array elements, all keys

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ne[0] first (ne[0] = row length), every dim >= 1
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;        // relative to the start of the data section
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
};

// Where an opened GGUF's bytes live: the file's pages mapped read-only (Mapped), or a copy read
// into anonymous memory on 2 MiB pages where the kernel gives them (Memory: decoding reads every
// weight per token, and on a virtual machine it read them 30-45% faster from such memory than
// from the page cache's 4 KiB pages; docs/performance.md). Memory maps instead when the image
// is larger than half the available memory.
enum class Residence { Mapped, Memory };

// An opened GGUF file. The image is memory-mapped read-only or read into memory (Residence),
// or, for from_memory, a caller-owned buffer that must outlive the object.
class GgufFile {
 public:
  // Opens and validates `path`. `data_offset_in_file` lets a GGUF embedded at a 512-byte-aligned
  // offset inside another file (a bundle member) be read in place: the GGUF occupies
  // [offset, offset + size) of the file; size 0 means "to the end".
  static std::unique_ptr<GgufFile> open(const std::string& path, uint64_t offset = 0,
                                        uint64_t size = 0, Residence where = Residence::Mapped);
  // Parses a GGUF image held in memory (tests, fuzzing). `name` is used in error messages.
  static std::unique_ptr<GgufFile> from_memory(const void* data, size_t size, std::string name);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& name() const { return name_; }  // path, for messages
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // relative to the GGUF start

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(std::string_view key) const;
  // Typed accessors: throw Error(Invalid) naming the file and key when the value is missing
  // (for the non-optional forms) or of the wrong type. Integer accessors accept any integer
  // type whose value fits.
  std::string get_string(std::string_view key) const;
  std::optional<std::string> get_string_opt(std::string_view key) const;
  uint64_t get_u64(std::string_view key) const;
  std::optional<uint64_t> get_u64_opt(std::string_view key) const;
  std::optional<int64_t> get_i64_opt(std::string_view key) const;
  float get_f32(std::string_view key) const;               // accepts F32 or F64
  std::optional<float> get_f32_opt(std::string_view key) const;
  std::optional<bool> get_bool_opt(std::string_view key) const;
  // Array accessors (nullptr when absent; Error when present with another element type).
  const std::vector<GgufValue>* get_array(std::string_view key, GgufValueType elem) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  // Pointer to the tensor's bytes (n_bytes long, inside the image: mapping or memory).
  const uint8_t* tensor_data(const GgufTensorInfo& t) const;
  // Maps every page of the file now (reading it from disk when it is not cached), so that
  // evaluation does not take page faults; a hint: nothing happens where the kernel cannot (or
  // when the image was read into memory).
  void prefault() const;

 private:
  GgufFile() = default;
  void parse(const uint8_t* base, uint64_t size);

  std::string name_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
  const uint8_t* base_ = nullptr;  // start of the GGUF image
  uint64_t size_ = 0;
  void* map_addr_ = nullptr;  // mmap bookkeeping (whole-page mapping)
  size_t map_len_ = 0;
  std::unique_ptr<HugeMemory> memory_;  // the image, for Residence::Memory
};

// Writes GGUF v3. Same inputs give the same bytes: metadata and tensors are written in the order
// they were added, padding bytes are zero, alignment is general.alignment (default 32).
class GgufWriter {
 public:
  void set(std::string key, GgufValue value);  // replaces an existing key in place
  // `data` must hold exactly the bytes of `dims` elements of `type` (row_bytes of ne[0] times
  // the other dims); it is copied.
  void add_tensor(std::string name, GgmlType type, std::vector<int64_t> dims,
                  const void* data, size_t n_bytes);
  std::vector<uint8_t> to_bytes() const;
  void write_file(const std::string& path) const;  // to path.tmp, then rename

 private:
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> dims;
    std::vector<uint8_t> data;
  };
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Tensor> tensors_;
};

}  // namespace galleon
