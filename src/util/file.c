#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"

static const char *kind_of(mode_t m) {
    if (S_ISDIR(m)) return "is a directory, not a file";
    if (S_ISFIFO(m)) return "is a FIFO (named pipe), not a regular file";
    if (S_ISCHR(m)) return "is a character device, not a regular file";
    if (S_ISBLK(m)) return "is a block device, not a regular file";
    if (S_ISSOCK(m)) return "is a socket, not a regular file";
    return "is not a regular file";
}

static lm_status open_error(const char *path, int e) {
    switch (e) {
    case ENOENT: return lm_err(LM_ERR_IO, "%s: no such file", path);
    case EACCES: return lm_err(LM_ERR_IO, "%s: permission denied", path);
    case ELOOP: return lm_err(LM_ERR_IO, "%s: too many levels of symbolic links (a symlink loop?)", path);
    case ENOTDIR: return lm_err(LM_ERR_IO, "%s: a component of the path is not a directory", path);
    case ENAMETOOLONG: return lm_err(LM_ERR_IO, "%s: path too long", path);
    default: return lm_err(LM_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
}

static lm_status open_input(const char *path, bool streams, int *fd, uint64_t *size) {
    *fd = -1;
    if (size) *size = 0;
    if (!path || !*path) return lm_err(LM_ERR_INVALID_ARG, "empty file name");
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    int f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (f < 0) return open_error(path, errno);
    struct stat sb;
    if (fstat(f, &sb) != 0) {
        int e = errno;
        close(f);
        return lm_err(LM_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    bool ok = S_ISREG(sb.st_mode) || (streams && (S_ISFIFO(sb.st_mode) || S_ISCHR(sb.st_mode)));
    if (!ok) {
        close(f);
        return lm_err(LM_ERR_IO, "%s: %s", path, kind_of(sb.st_mode));
    }
    int fl = fcntl(f, F_GETFL);
    if (fl >= 0) fcntl(f, F_SETFL, fl & ~O_NONBLOCK);
    *fd = f;
    if (size) *size = S_ISREG(sb.st_mode) ? (uint64_t)sb.st_size : 0;
    return LM_OK;
}

lm_status lm_open_regular(const char *path, int *fd, uint64_t *size) { return open_input(path, false, fd, size); }
lm_status lm_open_stream(const char *path, int *fd, uint64_t *size) { return open_input(path, true, fd, size); }

lm_status lm_read_file(const char *path, size_t max_bytes, char **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    int fd;
    uint64_t size;
    lm_status st = lm_open_regular(path, &fd, &size);
    if (st) return st;
    char a[32], b[32];
    if (size > max_bytes) {
        close(fd);
        return lm_err(LM_ERR_FORMAT, "%s: file is %s (%llu bytes), more than the %s this file may have", path,
                      lm_format_bytes((double)size, a, sizeof a), (unsigned long long)size,
                      lm_format_bytes((double)max_bytes, b, sizeof b));
    }
    // Read to the end rather than trusting the size: files of /proc report 0.
    // Never more than max_bytes, even if the file grows meanwhile.
    size_t cap = (size_t)size + 1, got = 0;
    char *p = lm_malloc(cap < 4096 ? 4096 : cap);
    if (cap < 4096) cap = 4096;
    while (p) {
        if (got + 1 == cap) {
            if (got >= max_bytes) {  // full: fine if the file ends here
                char extra;
                ssize_t r;
                while ((r = read(fd, &extra, 1)) < 0 && errno == EINTR) {}
                if (r == 0) break;
                free(p);
                close(fd);
                return lm_err(LM_ERR_FORMAT, "%s: more than the %s this file may have", path,
                              lm_format_bytes((double)max_bytes, b, sizeof b));
            }
            size_t ncap = cap * 2 > max_bytes + 1 ? max_bytes + 2 : cap * 2;
            char *t = realloc(p, ncap);
            if (!t) {
                free(p);
                p = NULL;
                lm_err(LM_ERR_OOM, "%s: out of memory reading it", path);
                break;
            }
            p = t;
            cap = ncap;
        }
        ssize_t r = read(fd, p + got, cap - 1 - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            free(p);
            close(fd);
            return lm_err(LM_ERR_IO, "%s: read error: %s", path, strerror(e));
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (!p) return LM_ERR_OOM;
    p[got] = 0;
    *buf = p;
    *len = got;
    return LM_OK;
}

lm_status lm_check_dir(const char *path) {
    if (!path || !*path) return lm_err(LM_ERR_INVALID_ARG, "empty directory name");
    struct stat sb;
    if (stat(path, &sb) != 0) {
        int e = errno;
        if (e == ENOENT) return lm_err(LM_ERR_IO, "%s: no such directory", path);
        return open_error(path, e);
    }
    if (!S_ISDIR(sb.st_mode)) return lm_err(LM_ERR_IO, "%s: not a directory", path);
    if (access(path, R_OK | X_OK) != 0)
        return lm_err(LM_ERR_IO, "%s: permission denied (cannot read the directory)", path);
    return LM_OK;
}

bool lm_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

char *lm_path_join(const char *dir, const char *name) {
    size_t dl = strlen(dir), nl = strlen(name);
    bool slash = dl > 0 && dir[dl - 1] == '/';
    char *p = lm_malloc(dl + nl + 2);
    if (p) {
        memcpy(p, dir, dl);
        if (!slash) p[dl++] = '/';
        memcpy(p + dl, name, nl + 1);
    }
    return p;
}

uint64_t lm_mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f)) found = sscanf(line, "MemAvailable: %llu kB", &kb) == 1;
    if (f) fclose(f);
    return found ? (uint64_t)kb * 1024 : 0;
}

lm_status lm_mem_check(uint64_t bytes, double headroom, const char *what) {
    uint64_t avail = lm_mem_available();
    if (!avail) return LM_OK;  // unknown (not Linux): let the allocation decide
    if ((double)bytes <= (1.0 - headroom) * (double)avail) return LM_OK;
    char a[32], b[32];
    return lm_err(LM_ERR_OOM, "%s needs %s of memory but %s is available", what,
                  lm_format_bytes((double)bytes, a, sizeof a), lm_format_bytes((double)avail, b, sizeof b));
}

double lm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
