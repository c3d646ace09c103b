#!/usr/bin/env python3
"""The instruction-set regions hold (runtime/isa_region.h): in each linked executable given, no
global or weak function outside the instruction-set code holds an AVX, AVX2 or AVX-512
instruction. Such a function is one copy chosen by the linker among every object file's copies;
one compiled for AVX-512 faults on a CPU without it, whichever caller reaches it. The check reads
the executables (objdump, nm), so it holds on any x86-64 machine, whatever its CPU.

Allowed: functions of the ISA namespaces (galleon::kern::avx2, galleon::kern::avx512,
galleon::sha256_shani), run only where the CPU has the instructions; C library functions (no
"::" in the name), which pick their variants by CPU themselves (IFUNC); local (static, anonymous
namespace) functions, which only their own file calls.

Usage: isa_regions_test.py EXECUTABLE...   (exit 0: clean, 1: offending functions listed)
"""
import re
import subprocess
import sys

ALLOWED_NAMESPACES = ("galleon::kern::avx2::", "galleon::kern::avx512::", "galleon::sha256_shani::")
WIDE = re.compile(r"%[yz]mm|%k[0-7]")


def run(argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def global_functions(exe):
    names = set()
    for line in run(["nm", "-C", "--defined-only", exe]).splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in ("T", "W", "i", "u"):
            names.add(parts[2])
    return names


def vex_functions(exe):
    """Function name -> (count, first instruction) of VEX/EVEX-encoded instructions."""
    found, current = {}, None
    for line in run(["objdump", "-d", "--no-show-raw-insn", "-C", exe]).splitlines():
        head = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if head:
            current = head.group(1)
            continue
        fields = line.split("\t")
        if current is None or len(fields) < 2 or not fields[1].strip():
            continue
        insn = fields[1].strip()
        mnemonic = insn.split()[0]
        operands = insn[len(mnemonic):].split("#")[0].split("<")[0]
        if mnemonic.startswith("v") or WIDE.search(operands):
            count, first = found.get(current, (0, insn))
            found[current] = (count + 1, first)
    return found


def offending(exe):
    globals_ = global_functions(exe)
    bad = []
    for name, (count, first) in vex_functions(exe).items():
        if name not in globals_ or "::" not in name:
            continue
        if any(n in name for n in ALLOWED_NAMESPACES):
            continue
        bad.append((name, count, first))
    return bad


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    failed = False
    for exe in sys.argv[1:]:
        bad = offending(exe)
        if bad:
            failed = True
            print(f"{exe}: {len(bad)} shared function(s) hold AVX/AVX-512 instructions outside "
                  "the instruction-set regions (runtime/isa_region.h):")
            for name, count, first in sorted(bad):
                print(f"  {name}: {count} instructions, e.g. {first}")
        else:
            print(f"{exe}: no shared function holds AVX/AVX-512 instructions outside the regions")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
