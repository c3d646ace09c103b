// Anonymous memory for data read once and then streamed many times (model weights): 2 MiB
// aligned and advised MADV_HUGEPAGE, so that the kernel backs it with 2 MiB pages where it can
// (docs/performance.md: on a virtual machine, decoding read its weights 30-45% faster from such
// memory than from the page cache's 4 KiB pages). 4 KiB pages otherwise; the contents are the
// same either way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace galleon {

// Bytes of memory the kernel could give without swapping (MemAvailable of /proc/meminfo; the
// free pages where that cannot be read).
uint64_t available_memory_bytes();

class HugeMemory {
 public:
  // `bytes` of zeroed memory; `what` names the data in the error when there is no memory.
  HugeMemory(size_t bytes, const std::string& what);
  ~HugeMemory();
  HugeMemory(const HugeMemory&) = delete;
  HugeMemory& operator=(const HugeMemory&) = delete;

  uint8_t* data() const { return start_; }
  size_t size() const { return size_; }

 private:
  void* addr_ = nullptr;  // the whole mapping (size_ plus up to 2 MiB for the alignment)
  size_t len_ = 0;
  uint8_t* start_ = nullptr;
  size_t size_ = 0;
};

}  // namespace galleon
