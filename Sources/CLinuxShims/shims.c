#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <errno.h>
#include "CLinuxShims.h"

int lifeboat_start_writeback(int fd) {
#ifdef SYNC_FILE_RANGE_WRITE
    return sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd;
    return 0;
#endif
}

int lifeboat_start_writeback_range(int fd, long long offset, long long length) {
#ifdef SYNC_FILE_RANGE_WRITE
    return sync_file_range(fd, (off64_t)offset, (off64_t)length, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd; (void)offset; (void)length;
    return 0;
#endif
}

int lifeboat_spawn_close_from(void *actions, int lowfd) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, lowfd);
#else
    (void)actions; (void)lowfd;
    return ENOSYS;
#endif
}

int lifeboat_open_direct_write(const char *path) {
    return open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
}

#include <malloc.h>

int lifeboat_set_malloc_thresholds(int mmap_threshold, int trim_threshold) {
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1;
}
