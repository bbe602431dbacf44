#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
/* Emulates storage whose sync takes longer than this VM's (network disks, spinning
   disks): each fsync/fdatasync first sleeps SLOW_SYNC_MS (default 10) milliseconds, then
   syncs for real. For benchmarks only (docs/sync-benchmark.md):

     gcc -shared -fPIC -O2 -o /tmp/slow-sync.so scripts/slow-sync.c -ldl
     LD_PRELOAD=/tmp/slow-sync.so SLOW_SYNC_MS=10 scripts/bench-side-by-side.sh A B
*/
static void pause_ms(void) {
    const char *v = getenv("SLOW_SYNC_MS");
    long ms = v ? atol(v) : 10;
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}
int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fsync");
    pause_ms();
    return real(fd);
}
int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fdatasync");
    pause_ms();
    return real(fd);
}
