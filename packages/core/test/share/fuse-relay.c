/*
 * Test-only FUSE relay: mounts a FUSE file system at argv[1] on the HOST kernel and relays the
 * raw protocol over stdio, standing in for the guest agent's fs-attach relay:
 *   /dev/fuse --read(2)--> stdout   (raw requests, concatenated)
 *   stdin  --assembled by fuse_out_header.len--> one write(2) each to /dev/fuse
 * On stdin EOF: umount2(MNT_DETACH), close /dev/fuse (the kernel aborts the connection), exit 0.
 * Prints "mounted\n" on stderr once mounted. Exit 77 when mounting is not permitted (tests skip).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#define REQ_BUF 135168
#define REPLY_MAX 135168

static int fuse_fd = -1;
static const char *mnt;

static int write_all(int fd, const unsigned char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void *from_kernel(void *arg) {
  (void)arg;
  static unsigned char buf[REQ_BUF];
  for (;;) {
    ssize_t n = read(fuse_fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == ENOENT) continue;
      break; /* ENODEV: unmounted / aborted */
    }
    if (n == 0) break;
    if (write_all(1, buf, (size_t)n) < 0) break;
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: fuse-relay <mountpoint>\n");
    return 2;
  }
  mnt = argv[1];
  fuse_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fuse_fd < 0) {
    fprintf(stderr, "open /dev/fuse: %s\n", strerror(errno));
    return errno == EACCES || errno == EPERM || errno == ENOENT ? 77 : 1;
  }
  char opts[256];
  snprintf(opts, sizeof opts,
           "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other,max_read=131072,subtype=smfs", fuse_fd);
  if (mount("smfs-test", mnt, "fuse", MS_NOSUID | MS_NODEV, opts) < 0) {
    int e = errno;
    fprintf(stderr, "mount: %s\n", strerror(e));
    return e == EPERM || e == ENODEV ? 77 : 1;
  }
  fprintf(stderr, "mounted\n");

  pthread_t t;
  pthread_create(&t, NULL, from_kernel, NULL);

  static unsigned char in[REPLY_MAX * 2];
  size_t have = 0;
  for (;;) {
    ssize_t n = read(0, in + have, sizeof in - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    have += (size_t)n;
    size_t off = 0;
    while (have - off >= 4) {
      uint32_t len;
      memcpy(&len, in + off, 4);
      if (len < 16 || len > REPLY_MAX) {
        fprintf(stderr, "bad reply length %u\n", len);
        goto out;
      }
      if (have - off < len) break;
      if (write(fuse_fd, in + off, len) < 0) {
        /* ENOENT: the request was interrupted; ignore like the agent does. */
      }
      off += len;
    }
    memmove(in, in + off, have - off);
    have -= off;
  }
out:
  umount2(mnt, MNT_DETACH);
  close(fuse_fd);
  return 0;
}
