// The C side of the CallCost benchmark: the floor (the same ioctls done in plain C), a malloc
// counter, and callgrind client requests. No logic beyond that.
#ifndef CALL_COST_FLOOR_H
#define CALL_COST_FLOOR_H
#include <stdint.h>

/// The C floor of `IOMMUFDContext.map(_:into:at:access:)`: fills `struct iommu_ioas_map` on the
/// stack and calls `ioctl(2)`. Returns 0 or the errno.
int cc_map(int fd, uint32_t ioas, uint64_t user_va, uint64_t length, uint64_t iova, uint32_t flags);
/// The C floor of `IOMMUFDContext.unmap(_:from:)`: `IOMMU_IOAS_UNMAP` through `ioctl(2)`.
int cc_unmap(int fd, uint32_t ioas, uint64_t iova, uint64_t length);

/// As `cc_map` and `cc_unmap`, but calling a stub that answers 0 at once (through a function
/// pointer, as Swift calls its `KernelInterface`) instead of `ioctl(2)`.
int cc_map_stub(int fd, uint32_t ioas, uint64_t user_va, uint64_t length, uint64_t iova, uint32_t flags);
int cc_unmap_stub(int fd, uint32_t ioas, uint64_t iova, uint64_t length);

/// Calls to malloc, calloc, realloc, memalign, posix_memalign and aligned_alloc so far, in
/// every thread (the process's allocator is interposed by this target).
uint64_t cc_allocations(void);

/// Whether the process runs under valgrind.
int cc_on_valgrind(void);
/// `CALLGRIND_ZERO_STATS`; nothing outside valgrind.
void cc_callgrind_zero(void);
/// `CALLGRIND_DUMP_STATS_AT(name)`: writes the counts since the last zero, named.
void cc_callgrind_dump(const char *name);
#endif
