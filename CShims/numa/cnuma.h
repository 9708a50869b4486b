// libnuma, and getcpu(2), which glibc declares only under _GNU_SOURCE. Thin forwarding only.
#ifndef CNUMA_H
#define CNUMA_H
#include <numa.h>
#include <numaif.h>
#include <sys/syscall.h>
#include <unistd.h>

static inline int cnuma_getcpu(unsigned int *cpu, unsigned int *node) {
    return (int)syscall(SYS_getcpu, cpu, node, (void *)0);
}
#endif
