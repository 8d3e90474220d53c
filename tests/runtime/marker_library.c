/*
 * marker_library.c — a stand-in for lib/model.so that proves whether it was loaded: its
 * constructor runs at dlopen and creates the file named by $EDGERT_TEST_MARKER. The tests put it
 * in a bundle without fixing the manifest's hash (it must never be loaded) and with the hash
 * fixed (it is loaded, which shows the marker works).
 */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void leave_marker(void) {
  const char* path = getenv("EDGERT_TEST_MARKER");
  if (path == NULL) return;
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd >= 0) close(fd);
}
