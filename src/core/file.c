/*
 * Opening files named by someone else (see file.h).
 */
#include "core/file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tinkerbell/error.h"

int tb__open_regular(const char *path) {
  /* O_NONBLOCK: opening a FIFO for reading returns at once instead of
   * waiting for a writer; on a regular file it changes nothing. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0)
    return errno != 0 ? -errno : TB_EIO;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return e != 0 ? -e : TB_EIO;
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return TB_EINVAL;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0)
    (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  return fd;
}
