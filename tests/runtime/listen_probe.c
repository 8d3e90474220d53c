/*
 * listen_probe.c — LD_PRELOAD shim that logs every bind() and listen() of a process (and its
 * children) to $EDGERT_LISTEN_LOG, then does the real call. Lines: "bind FAMILY ADDRESS PORT" and
 * "listen FD". Used to show that edgert-run opens no listening socket unless asked.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void log_line(const char* line) {
  const char* path = getenv("EDGERT_LISTEN_LOG");
  if (path == NULL) return;
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (fd < 0) return;
  ssize_t ignored = write(fd, line, strlen(line));
  (void)ignored;
  close(fd);
}

int bind(int fd, const struct sockaddr* addr, socklen_t len) {
  char text[INET6_ADDRSTRLEN] = "?", line[160];
  int port = -1;
  if (addr->sa_family == AF_INET) {
    const struct sockaddr_in* a = (const struct sockaddr_in*)addr;
    inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
    port = ntohs(a->sin_port);
  } else if (addr->sa_family == AF_INET6) {
    const struct sockaddr_in6* a = (const struct sockaddr_in6*)addr;
    inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
    port = ntohs(a->sin6_port);
  }
  snprintf(line, sizeof line, "bind %d %s %d\n", addr->sa_family, text, port);
  log_line(line);
  int (*real)(int, const struct sockaddr*, socklen_t) = dlsym(RTLD_NEXT, "bind");
  return real(fd, addr, len);
}

int listen(int fd, int backlog) {
  char line[64];
  snprintf(line, sizeof line, "listen %d\n", fd);
  log_line(line);
  int (*real)(int, int) = dlsym(RTLD_NEXT, "listen");
  return real(fd, backlog);
}
