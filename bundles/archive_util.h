// bundles (private): RAII owners for libarchive handles.
#pragma once

#include <archive.h>
#include <archive_entry.h>

#include <memory>

namespace galleon::bundles::detail {

struct ArchiveWriteFree {
  void operator()(archive* a) const noexcept { archive_write_free(a); }
};
struct ArchiveReadFree {
  void operator()(archive* a) const noexcept { archive_read_free(a); }
};
struct EntryFree {
  void operator()(archive_entry* e) const noexcept { archive_entry_free(e); }
};

using WriteArchive = std::unique_ptr<archive, ArchiveWriteFree>;
using ReadArchive = std::unique_ptr<archive, ArchiveReadFree>;
using Entry = std::unique_ptr<archive_entry, EntryFree>;

inline uint64_t round_up_512(uint64_t n) { return (n + 511) / 512 * 512; }

}  // namespace galleon::bundles::detail
