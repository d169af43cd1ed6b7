/* What a process reads from SQLite's -wal and -shm files and from other regular files, counted at the
 * libc boundary (LD_PRELOAD) for bench.ship_replicas. Python's own reads (walship's scans and copies of
 * the WAL) and SQLite's (the shipper's checkpoints and snapshots, through apsw) both pass here, which
 * /proc/PID/io cannot tell apart: its rchar mixes in the spool's and the Python modules' reads.
 *
 * At exit the counts and the peak RSS go to $WALSHIP_BENCH_READS.<pid> as JSON (the pid: a child that inherits
 * LD_PRELOAD writes its own file, never the shipper's).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum { OTHER, WAL, SHM, KINDS };
static const char *const NAMES[KINDS] = {"other", "wal", "shm"};
static unsigned long long bytes[KINDS], calls[KINDS];

/* An fd's kind is looked up by path once per file: a reused fd number is told by its inode. */
#define MAX_FD 8192
static struct {
    dev_t dev;
    ino_t ino;
    int kind;
} seen[MAX_FD];
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;

static int ends_with(const char *s, size_t n, const char *suffix) {
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

static int kind_of(int fd) {
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return -1;
    if (fd >= MAX_FD)
        return OTHER;
    pthread_mutex_lock(&seen_lock);
    int kind = seen[fd].kind;
    if (seen[fd].dev != st.st_dev || seen[fd].ino != st.st_ino || kind == 0) {
        char link[64], path[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, path, sizeof path - 1);
        kind = n > 0 && ends_with(path, (size_t)n, "-wal") ? WAL : n > 0 && ends_with(path, (size_t)n, "-shm") ? SHM : OTHER;
        seen[fd].dev = st.st_dev;
        seen[fd].ino = st.st_ino;
        seen[fd].kind = kind + 1; /* 0 means never looked up */
    } else {
        kind -= 1;
    }
    pthread_mutex_unlock(&seen_lock);
    return kind;
}

static ssize_t count(int fd, ssize_t got) {
    if (got > 0) {
        int kind = kind_of(fd);
        if (kind >= 0) {
            __atomic_add_fetch(&bytes[kind], (unsigned long long)got, __ATOMIC_RELAXED);
            __atomic_add_fetch(&calls[kind], 1, __ATOMIC_RELAXED);
        }
    }
    return got;
}

/* The libc function this one stands in for, looked up on first use. */
#define REAL(name)                                                                                      \
    static __typeof__(&name) real_##name;                                                              \
    if (real_##name == NULL)                                                                           \
    real_##name = (__typeof__(&name))dlsym(RTLD_NEXT, #name)

ssize_t read(int fd, void *buf, size_t n) {
    REAL(read);
    return count(fd, real_read(fd, buf, n));
}

ssize_t pread(int fd, void *buf, size_t n, off_t at) {
    REAL(pread);
    return count(fd, real_pread(fd, buf, n, at));
}

ssize_t pread64(int fd, void *buf, size_t n, off64_t at) {
    REAL(pread64);
    return count(fd, real_pread64(fd, buf, n, at));
}

ssize_t readv(int fd, const struct iovec *iov, int k) {
    REAL(readv);
    return count(fd, real_readv(fd, iov, k));
}

ssize_t preadv(int fd, const struct iovec *iov, int k, off_t at) {
    REAL(preadv);
    return count(fd, real_preadv(fd, iov, k, at));
}

ssize_t preadv64(int fd, const struct iovec *iov, int k, off64_t at) {
    REAL(preadv64);
    return count(fd, real_preadv64(fd, iov, k, at));
}

static pid_t owner;

__attribute__((constructor)) static void started(void) { owner = getpid(); }

__attribute__((destructor)) static void dump(void) {
    const char *base = getenv("WALSHIP_BENCH_READS");
    char path[PATH_MAX];
    if (base == NULL || getpid() != owner || snprintf(path, sizeof path, "%s.%d", base, (int)owner) >= (int)sizeof path)
        return;
    FILE *out = fopen(path, "w");
    if (out == NULL)
        return;
    /* Peak RSS here, not from wait4: a child's ru_maxrss also counts the parent's image it was forked from. */
    unsigned long hwm = 0;
    char line[256];
    FILE *status = fopen("/proc/self/status", "r");
    while (status != NULL && fgets(line, sizeof line, status) != NULL)
        if (sscanf(line, "VmHWM: %lu kB", &hwm) == 1)
            break;
    if (status != NULL)
        fclose(status);
    fprintf(out, "{\"peak_rss_kib\": %lu, ", hwm);
    for (int k = 0; k < KINDS; k++)
        fprintf(out, "%s\"%s_bytes\": %llu, \"%s_calls\": %llu", k ? ", " : "", NAMES[k], bytes[k], NAMES[k], calls[k]);
    fputs("}\n", out);
    fclose(out);
}
