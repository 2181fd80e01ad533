/*
 * Opening files named by someone else.
 *
 * A path that comes from a user or an operator (a model directory, a
 * checkpoint, a keys or certificate file) may name a FIFO, a device or a
 * socket, whose open(2) for reading waits for a writer that never comes:
 * the thread that opened it hangs, and with it a clean shutdown.  Such
 * paths are opened without blocking and anything but a regular file is
 * refused before a byte is read.  Non-goals: files the process created
 * itself, and directories.
 */
#ifndef TB_CORE_FILE_H
#define TB_CORE_FILE_H

/* Opens a regular file for reading (O_RDONLY | O_CLOEXEC, blocking mode
 * restored after the check).  Returns the descriptor, or a negative code:
 * the open or fstat failure as -errno, or TB_EINVAL for a file that is not
 * regular. */
int tb__open_regular(const char *path);

#endif /* TB_CORE_FILE_H */
