// libc entry points Swift cannot call directly: variadic ioctl, and calls glibc declares only
// under _GNU_SOURCE. Thin forwarding only.
#ifndef CIO_SYSCALLS_H
#define CIO_SYSCALLS_H
#ifdef __linux__
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/memfd.h>
#include <stdint.h>

static inline int cio_ioctl(int fd, unsigned long request, void *argument) {
    return ioctl(fd, request, argument);
}

static inline int cio_memfd_create(const char *name, unsigned int flags) {
    return (int)syscall(SYS_memfd_create, name, flags);
}

static inline int cio_eventfd(unsigned int initial, int flags) {
    return eventfd(initial, flags);
}

// Device register accesses through a mapped BAR: volatile, so each is one access of its width.
static inline uint8_t cio_mmio_read8(const void *p) { return *(const volatile uint8_t *)p; }
static inline uint16_t cio_mmio_read16(const void *p) { return *(const volatile uint16_t *)p; }
static inline uint32_t cio_mmio_read32(const void *p) { return *(const volatile uint32_t *)p; }
static inline uint64_t cio_mmio_read64(const void *p) { return *(const volatile uint64_t *)p; }
static inline void cio_mmio_write8(void *p, uint8_t v) { *(volatile uint8_t *)p = v; }
static inline void cio_mmio_write16(void *p, uint16_t v) { *(volatile uint16_t *)p = v; }
static inline void cio_mmio_write32(void *p, uint32_t v) { *(volatile uint32_t *)p = v; }
static inline void cio_mmio_write64(void *p, uint64_t v) { *(volatile uint64_t *)p = v; }
#endif
#endif
