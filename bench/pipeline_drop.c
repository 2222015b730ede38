/* pipeline_drop.c -- the police records system of bench/pipeline.sh: drops prepared exports into a watched
 * folder the way a records system does (write NAME.json.part, then rename it to NAME.json) and records
 * the wall-clock time of each rename, the moment the export is in the folder.
 *
 *   pipeline_drop STAGING DROP TIMES [RATE]
 *
 * Every file of STAGING (by name) is read first, so the drops themselves cost only the write and the rename.
 * RATE (exports per second, default 0: as fast as the file system takes them) paces the drops. TIMES gets
 * one line per export: "NAME.json DROP_NS" (CLOCK_REALTIME, the clock file times are stamped with). */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    char name[256];
    char *data;
    size_t len;
} staged_t;

static int64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int is_json(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return e->d_name[0] != '.' && n > 5 && strcmp(e->d_name + n - 5, ".json") == 0;
}

static _Noreturn void fail(const char *what, const char *path)
{
    fprintf(stderr, "pipeline_drop: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: pipeline_drop STAGING DROP TIMES [RATE]\n");
        return 2;
    }
    const char *staging = argv[1], *drop = argv[2];
    double rate = argc == 5 ? strtod(argv[4], NULL) : 0;
    struct dirent **names;
    int n = scandir(staging, &names, is_json, by_name);
    if (n <= 0)
        fail("no exports in", staging);
    staged_t *files = calloc((size_t)n, sizeof *files);
    int64_t *dropped = calloc((size_t)n, sizeof *dropped);
    if (files == NULL || dropped == NULL)
        fail("out of memory for", staging);
    char path[4096], part[4200];
    for (int i = 0; i < n; i++) {
        snprintf(files[i].name, sizeof files[i].name, "%s", names[i]->d_name);
        free(names[i]);
        snprintf(path, sizeof path, "%s/%s", staging, files[i].name);
        FILE *f = fopen(path, "rb");
        if (f == NULL || fseek(f, 0, SEEK_END) != 0)
            fail("cannot read", path);
        long size = ftell(f);
        rewind(f);
        files[i].data = malloc((size_t)size + 1);
        if (files[i].data == NULL || size < 0 || fread(files[i].data, 1, (size_t)size, f) != (size_t)size)
            fail("cannot read", path);
        files[i].len = (size_t)size;
        fclose(f);
    }
    free(names);
    int64_t start = realtime_ns();
    for (int i = 0; i < n; i++) {
        if (rate > 0) { /* paced: export i is due i/rate seconds after the first */
            int64_t due = start + (int64_t)(i / rate * 1e9), wait = due - realtime_ns();
            if (wait > 0) {
                struct timespec ts = {wait / 1000000000, wait % 1000000000};
                nanosleep(&ts, NULL);
            }
        }
        snprintf(path, sizeof path, "%s/%s", drop, files[i].name);
        snprintf(part, sizeof part, "%s.part", path);
        FILE *f = fopen(part, "wb");
        if (f == NULL || fwrite(files[i].data, 1, files[i].len, f) != files[i].len || fclose(f) != 0)
            fail("cannot write", part);
        if (rename(part, path) != 0)
            fail("cannot rename", part);
        dropped[i] = realtime_ns();
    }
    FILE *out = fopen(argv[3], "w");
    if (out == NULL)
        fail("cannot write", argv[3]);
    for (int i = 0; i < n; i++) {
        fprintf(out, "%s %lld\n", files[i].name, (long long)dropped[i]);
        free(files[i].data);
    }
    fclose(out);
    free(files);
    free(dropped);
    return 0;
}
