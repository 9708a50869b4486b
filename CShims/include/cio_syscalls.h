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

static inline int cio_ioctl(int fd, unsigned long request, void *argument) {
    return ioctl(fd, request, argument);
}

static inline int cio_memfd_create(const char *name, unsigned int flags) {
    return (int)syscall(SYS_memfd_create, name, flags);
}

static inline int cio_eventfd(unsigned int initial, int flags) {
    return eventfd(initial, flags);
}
#endif
#endif
