// Instruction-set regions. A kernels_<isa>*.cpp file is compiled with the baseline flags, like
// every other file; only its own code, between GALLEON_ISA_BEGIN and GALLEON_ISA_END, is
// compiled for the instruction set (a target attribute on each function there).
//
// Why not the -m flags on the whole file: an inline function or a template instantiation with
// external linkage (std::vector<uint8_t>::resize, an inline function of a runtime header) is
// emitted by every object file that uses it and the linker keeps one copy. Compiled with
// -mavx512bw, that copy holds AVX-512 instructions and faults wherever it is called from on a
// CPU without them (an -O1 build did, in Session::reserve, on an AVX2 machine).
//
// So everything with external linkage that such a file uses, the standard library and the
// runtime's shared headers, is included before GALLEON_ISA_BEGIN. Inside go only the file's own
// code and headers whose functions have internal linkage (anonymous namespaces), so that each
// ISA file gets its own copy of them, compiled for its instruction set.
// tests/isa_regions_test.py checks the linked executables: no global or weak function outside
// the ISA namespaces holds an AVX or AVX-512 instruction.
#pragma once

#define GALLEON_PRAGMA_(x) _Pragma(#x)
#if defined(__clang__)
#define GALLEON_ISA_BEGIN(isa) \
  GALLEON_PRAGMA_(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define GALLEON_ISA_END GALLEON_PRAGMA_(clang attribute pop)
#else
#define GALLEON_ISA_BEGIN(isa) GALLEON_PRAGMA_(GCC push_options) GALLEON_PRAGMA_(GCC target(isa))
#define GALLEON_ISA_END GALLEON_PRAGMA_(GCC pop_options)
#endif
