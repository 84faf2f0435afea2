/* The filesystem floor: what the primitive operations a session store is built from
 * cost on this machine, so that session costs can be stated against the physical limit.
 *
 *   floor DIR ITERATIONS
 *
 * Times each operation individually (CLOCK_MONOTONIC) on 4 KiB records in DIR and prints
 * one JSON object: {"op": {"median_ns": ..., "p90_ns": ...}, ...}. No fsync anywhere:
 * session stores do not fsync by default either.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RECORD 4096

static char buf[RECORD];
static char target[4096];
static char temp[4096];
static int fd = -1;

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void write_all(int out, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(out, data, len);
        if (n < 0) die("write");
        data += n;
        len -= (size_t)n;
    }
}

static void op_open_close(void) {
    int f = open(target, O_RDONLY);
    if (f < 0) die("open");
    close(f);
}

static void op_stat(void) {
    struct stat st;
    if (stat(target, &st) != 0) die("stat");
}

static void op_pread(void) {
    if (pread(fd, buf, RECORD, 0) != RECORD) die("pread");
}

static void op_pwrite(void) {
    buf[0]++;
    if (pwrite(fd, buf, RECORD, 0) != RECORD) die("pwrite");
}

static void op_flock(void) {
    if (flock(fd, LOCK_EX) != 0) die("flock");
    if (flock(fd, LOCK_UN) != 0) die("funlock");
}

static void op_truncate_write(void) {
    int f = open(target, O_WRONLY | O_TRUNC);
    if (f < 0) die("open trunc");
    write_all(f, buf, RECORD);
    close(f);
}

static void op_temp_rename(void) {
    int f = open(temp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (f < 0) die("open temp");
    write_all(f, buf, RECORD);
    close(f);
    if (rename(temp, target) != 0) die("rename");
}

static void op_create_unlink(void) {
    int f = open(temp, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (f < 0) die("create");
    write_all(f, buf, RECORD);
    close(f);
    if (unlink(temp) != 0) die("unlink");
}

static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static void measure(const char *name, void (*op)(void), int iterations, int first) {
    long long *samples = malloc(sizeof(long long) * (size_t)iterations);
    if (!samples) die("malloc");
    for (int i = 0; i < 10; i++) op(); /* warm-up */
    for (int i = 0; i < iterations; i++) {
        long long start = now_ns();
        op();
        samples[i] = now_ns() - start;
    }
    qsort(samples, (size_t)iterations, sizeof(long long), cmp);
    printf("%s\"%s\": {\"median_ns\": %lld, \"p90_ns\": %lld}", first ? "" : ", ", name,
           samples[iterations / 2], samples[iterations * 9 / 10]);
    free(samples);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: floor DIR ITERATIONS\n");
        return 2;
    }
    int iterations = atoi(argv[2]);
    if (iterations < 10) iterations = 10;
    snprintf(target, sizeof target, "%s/record", argv[1]);
    snprintf(temp, sizeof temp, "%s/record.tmp", argv[1]);
    memset(buf, 'x', sizeof buf);
    fd = open(target, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) die("open target");
    write_all(fd, buf, RECORD);

    printf("{");
    measure("open_close", op_open_close, iterations, 1);
    measure("stat", op_stat, iterations, 0);
    measure("pread_4k", op_pread, iterations, 0);
    measure("pwrite_4k_in_place", op_pwrite, iterations, 0);
    measure("flock_unlock", op_flock, iterations, 0);
    close(fd);
    measure("truncate_write_4k", op_truncate_write, iterations, 0);
    measure("temp_write_rename_4k", op_temp_rename, iterations, 0);
    measure("create_write_unlink_4k", op_create_unlink, iterations, 0);
    printf("}\n");
    unlink(target);
    return 0;
}
