"""The caches of the machine the kernels run on, and the matrix product's blocking derived from them.

Derivation: derivations/03-linear.md ((L1)-(L3)), the product whose sums these blocks cut up (the order of
the sums within each C[i, j] stays k = 0, 1, ...).

The packed matrix product (``gemm_packed.py``) cuts its work into blocks that must fit a level of cache:

- kc, the rows of k in one block: the tile's A panel (8 x kc values) is read once per step of k by every
  tile of a row of C, so it should stay in half of the L1 data cache; the B panel (kc x 32 values) is read
  from L2 and should take at most a quarter of it.  kc = the largest multiple of 64 that satisfies both
  (at least 64, at most 1024).  Long blocks spread the tile's fixed cost (loading and storing its 8 x 32
  block of C) over more steps of k: with 256 steps that cost was about 8% of a call, with 512 about 4%.
- mc, the rows of C per parallel task: the task's A panels (mc x kc values) take 3/16 of L2, the rest
  holding the B panels streaming past and C.  A multiple of 8.
- the widest b read in place (not packed): while one row of b is at most one way of the L1 data cache
  (size / associativity, 4 KiB on both Zen 4 and Zen 5), the 32-column panel's rows, N floats apart,
  fall in distinct sets and pages often enough that the tile reads them as fast as a packed panel (n =
  256: 136-162 -> 174-191 GFLOP/s on 2 threads, the copy and a parallel pass saved); at twice that (n =
  2048 in float32) every row of k is a new 4 KiB page and the rows alias, and it ran at 127 GFLOP/s
  against 175 packed.

On the Zen 4 these were measured on (L1d 32 KiB 8-way, L2 1 MiB 8-way) this gives kc = 512, mc = 96 and
in place up to n = 1024 in float32 (256, 96 and 512 in float64).  On a Zen 5 (L1d 48 KiB 12-way, L2 1 MiB
16-way, two full-width 512-bit FMA units) it gives kc = 768 and mc = 64 in float32: a longer k loop per
tile call in a larger L1, the same in-place limit.  What the cache sizes change is only how the sums are
split into blocks (each C[i, j] still sums its k blocks in order on one thread), so a result never depends
on the thread count; a different machine may round the last bits differently.

Read from Linux's /sys/devices/system/cpu/cpu0/cache once per process; elsewhere (or when that is
unreadable) the Zen 4 sizes above are assumed, and ``caches().source`` says so.
"""
import functools
import os
from collections import namedtuple

from .tile import MR, NR

Caches = namedtuple("Caches", ["l1d", "l1d_ways", "l2", "l2_ways", "l3", "source"])
Blocking = namedtuple("Blocking", ["kc", "mc", "in_place_max_n"])

ASSUMED = Caches(32 << 10, 8, 1 << 20, 8, 32 << 20, "assumed (Zen 4 sizes): the caches could not be read")
SYSFS = "/sys/devices/system/cpu/cpu0/cache"


def parse_size(text):
    """'32K' -> 32768, '1024K', '32M', '512' (bytes)."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text[:-1] if scale > 1 else text) * scale


def read_caches(root=SYSFS):
    """The data caches of the first CPU from ``root`` (Linux's sysfs layout: index*/level, type, size,
    ways_of_associativity), or ``ASSUMED`` when they cannot be read or L1d or L2 is missing."""
    found = {}
    try:
        for entry in sorted(os.listdir(root)):
            if not entry.startswith("index"):
                continue
            d = os.path.join(root, entry)

            def read(name, d=d):
                with open(os.path.join(d, name), encoding="ascii") as f:
                    return f.read().strip()
            if read("type") == "Instruction":
                continue
            try:
                ways = int(read("ways_of_associativity"))
            except (OSError, ValueError):
                ways = 0
            found[int(read("level"))] = (parse_size(read("size")), ways)
    except (OSError, ValueError):
        return ASSUMED
    if 1 not in found or 2 not in found:
        return ASSUMED
    (l1, w1), (l2, w2) = found[1], found[2]
    return Caches(l1, w1 or 8, l2, w2 or 8, found.get(3, (0, 0))[0], f"read from {root}")


@functools.lru_cache(maxsize=1)
def caches():
    """This machine's caches (``read_caches``), read once per process."""
    return read_caches()


def blocking_for(itemsize, c):
    """The ``Blocking`` (kc, mc, in_place_max_n) of the packed matrix product for values of ``itemsize`` bytes
    on caches ``c`` (the rules at the top of this file)."""
    kc = min(c.l1d // 2 // (MR * itemsize), c.l2 // 4 // (NR * itemsize)) // 64 * 64
    kc = max(64, min(1024, kc))
    mc = max(MR, 3 * c.l2 // 16 // (kc * itemsize) // MR * MR)
    in_place_max_n = (c.l1d // max(1, c.l1d_ways)) // itemsize
    return Blocking(kc, mc, in_place_max_n)


@functools.lru_cache(maxsize=4)
def matmul_blocking(itemsize):
    """``blocking_for`` this machine's caches, once per item size."""
    return blocking_for(itemsize, caches())
