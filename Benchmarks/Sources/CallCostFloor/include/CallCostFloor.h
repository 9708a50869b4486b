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

/// The C floor of a loop of `count` maps: area k is `length` bytes at `user_va + k * length`,
/// mapped at `iova + k * length`, one `IOMMU_IOAS_MAP` each. Returns 0 or the first errno.
int cc_map_many(int fd, uint32_t ioas, uint64_t user_va, uint64_t length, uint64_t iova, uint32_t count, uint32_t flags);
/// The C floor of a loop of `count` unmaps of `length` bytes at `iova + k * length`.
int cc_unmap_many(int fd, uint32_t ioas, uint64_t iova, uint64_t length, uint32_t count);
/// The C floor of a churn batch: for each k, `IOMMU_IOAS_MAP` of one `length` area at `iovas[k]`
/// from `user_vas[k]` when `maps[k]` is 1, else its `IOMMU_IOAS_UNMAP`.
int cc_churn(int fd, uint32_t ioas, const uint64_t *iovas, const uint64_t *user_vas, const uint8_t *maps, uint32_t count,
             uint64_t length, uint32_t flags);
/// The C floor of `IOMMUFDContext.copy(_:from:to:at:access:)`: `IOMMU_IOAS_COPY` at a fixed IOVA.
int cc_copy(int fd, uint32_t dst_ioas, uint32_t src_ioas, uint64_t src_iova, uint64_t length, uint64_t dst_iova, uint32_t flags);

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
