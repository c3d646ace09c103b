#include "runtime/huge_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "runtime/error.h"

namespace galleon {

namespace {
constexpr size_t kHugePage = size_t(2) << 20;
}

uint64_t available_memory_bytes() {
  if (FILE* f = std::fopen("/proc/meminfo", "r")) {
    char line[256];
    unsigned long long kb = 0;
    bool found = false;
    while (!found && std::fgets(line, sizeof line, f))
      found = std::sscanf(line, "MemAvailable: %llu kB", &kb) == 1;
    std::fclose(f);
    if (found) return uint64_t(kb) * 1024;
  }
  const long pages = ::sysconf(_SC_AVPHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : 0;
}

HugeMemory::HugeMemory(size_t bytes, const std::string& what) : size_(bytes) {
  if (bytes > std::numeric_limits<size_t>::max() - kHugePage)
    fail(ErrorKind::Io, what + ": " + std::to_string(bytes) + " bytes cannot be held in memory");
  len_ = bytes + kHugePage;
  addr_ = ::mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (addr_ == MAP_FAILED) {
    addr_ = nullptr;
    fail(ErrorKind::Io, what + ": cannot allocate " + std::to_string(bytes) +
                            " bytes of memory: " + std::strerror(errno));
  }
  start_ = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(addr_) + kHugePage - 1) /
                                      kHugePage * kHugePage);
#ifdef MADV_HUGEPAGE
  if (bytes > 0) ::madvise(start_, bytes, MADV_HUGEPAGE);  // a hint: 4 KiB pages where refused
#endif
}

HugeMemory::~HugeMemory() {
  if (addr_) ::munmap(addr_, len_);
}

}  // namespace galleon
