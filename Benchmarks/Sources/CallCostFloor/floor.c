#include "CallCostFloor.h"
#include "CIOMMUFD.h"
#include <errno.h>
#include <sys/ioctl.h>

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#define CALLGRIND_ZERO_STATS
#define CALLGRIND_DUMP_STATS_AT(name) ((void)(name))
#endif

int cc_map(int fd, uint32_t ioas, uint64_t user_va, uint64_t length, uint64_t iova, uint32_t flags) {
    struct cio_iommu_ioas_map cmd = {
        .size = sizeof cmd, .flags = flags, .ioas_id = ioas, .user_va = user_va, .length = length, .iova = iova,
    };
    return ioctl(fd, CIO_IOMMU_IOAS_MAP, &cmd) == 0 ? 0 : errno;
}

int cc_unmap(int fd, uint32_t ioas, uint64_t iova, uint64_t length) {
    struct cio_iommu_ioas_unmap cmd = { .size = sizeof cmd, .ioas_id = ioas, .iova = iova, .length = length };
    return ioctl(fd, CIO_IOMMU_IOAS_UNMAP, &cmd) == 0 ? 0 : errno;
}

int cc_map_many(int fd, uint32_t ioas, uint64_t user_va, uint64_t length, uint64_t iova, uint32_t count, uint32_t flags) {
    for (uint32_t k = 0; k < count; k++) {
        struct cio_iommu_ioas_map cmd = {
            .size = sizeof cmd, .flags = flags, .ioas_id = ioas, .user_va = user_va + k * length, .length = length,
            .iova = iova + k * length,
        };
        if (ioctl(fd, CIO_IOMMU_IOAS_MAP, &cmd) != 0) return errno;
    }
    return 0;
}

int cc_unmap_many(int fd, uint32_t ioas, uint64_t iova, uint64_t length, uint32_t count) {
    for (uint32_t k = 0; k < count; k++) {
        struct cio_iommu_ioas_unmap cmd = { .size = sizeof cmd, .ioas_id = ioas, .iova = iova + k * length, .length = length };
        if (ioctl(fd, CIO_IOMMU_IOAS_UNMAP, &cmd) != 0) return errno;
    }
    return 0;
}

int cc_churn(int fd, uint32_t ioas, const uint64_t *iovas, const uint64_t *user_vas, const uint8_t *maps, uint32_t count,
             uint64_t length, uint32_t flags) {
    for (uint32_t k = 0; k < count; k++) {
        if (maps[k]) {
            struct cio_iommu_ioas_map cmd = {
                .size = sizeof cmd, .flags = flags, .ioas_id = ioas, .user_va = user_vas[k], .length = length, .iova = iovas[k],
            };
            if (ioctl(fd, CIO_IOMMU_IOAS_MAP, &cmd) != 0) return errno;
        } else {
            struct cio_iommu_ioas_unmap cmd = { .size = sizeof cmd, .ioas_id = ioas, .iova = iovas[k], .length = length };
            if (ioctl(fd, CIO_IOMMU_IOAS_UNMAP, &cmd) != 0) return errno;
        }
    }
    return 0;
}

int cc_copy(int fd, uint32_t dst_ioas, uint32_t src_ioas, uint64_t src_iova, uint64_t length, uint64_t dst_iova, uint32_t flags) {
    struct cio_iommu_ioas_copy cmd = {
        .size = sizeof cmd, .flags = flags, .dst_ioas_id = dst_ioas, .src_ioas_id = src_ioas, .length = length,
        .dst_iova = dst_iova, .src_iova = src_iova,
    };
    return ioctl(fd, CIO_IOMMU_IOAS_COPY, &cmd) == 0 ? 0 : errno;
}

__attribute__((noinline)) static int stub_ioctl(int fd, unsigned long request, void *argument) {
    (void)fd, (void)request, (void)argument;
    return 0;
}

/// Volatile, so the compiler can neither inline the stub nor drop the call.
static int (*volatile stub)(int, unsigned long, void *) = stub_ioctl;

int cc_map_stub(int fd, uint32_t ioas, uint64_t user_va, uint64_t length, uint64_t iova, uint32_t flags) {
    struct cio_iommu_ioas_map cmd = {
        .size = sizeof cmd, .flags = flags, .ioas_id = ioas, .user_va = user_va, .length = length, .iova = iova,
    };
    return stub(fd, CIO_IOMMU_IOAS_MAP, &cmd) == 0 ? 0 : errno;
}

int cc_unmap_stub(int fd, uint32_t ioas, uint64_t iova, uint64_t length) {
    struct cio_iommu_ioas_unmap cmd = { .size = sizeof cmd, .ioas_id = ioas, .iova = iova, .length = length };
    return stub(fd, CIO_IOMMU_IOAS_UNMAP, &cmd) == 0 ? 0 : errno;
}

int cc_on_valgrind(void) { return RUNNING_ON_VALGRIND; }
void cc_callgrind_zero(void) { CALLGRIND_ZERO_STATS; }
void cc_callgrind_dump(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }
