#pragma once

/// Starts asynchronous writeback of a file's dirty pages (sync_file_range with SYNC_FILE_RANGE_WRITE).
/// Returns 0 or -1 with errno set. Not a durability guarantee: fsync still follows.
int lifeboat_start_writeback(int fd);
