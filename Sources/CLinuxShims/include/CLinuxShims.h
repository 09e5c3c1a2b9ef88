#pragma once

/// Starts asynchronous writeback of a file's dirty pages (sync_file_range with SYNC_FILE_RANGE_WRITE).
/// Returns 0 or -1 with errno set. Not a durability guarantee: fsync still follows.
int lifeboat_start_writeback(int fd);

/// The same for one byte range of the file.
int lifeboat_start_writeback_range(int fd, long long offset, long long length);

/// Adds "close every descriptor from `lowfd` up" to a posix_spawn_file_actions_t (glibc ≥ 2.34), so that a child
/// inherits no socket or file of ours. Returns 0 or an errno value.
int lifeboat_spawn_close_from(void *actions, int lowfd);

/// Opens an existing file for writing with O_DIRECT (writes bypass the page cache). Returns the descriptor, or -1
/// with errno set when the file system does not support it (tmpfs: EINVAL).
int lifeboat_open_direct_write(const char *path);

/// Sets glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD (malloc.h, which Glibc's Swift module does not export).
/// Returns 1 when both were accepted, 0 otherwise.
int lifeboat_set_malloc_thresholds(int mmap_threshold, int trim_threshold);
