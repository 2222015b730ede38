/* secrets_test.c -- what must never leak. A canary planted in a referral's narrative, and the bytes of every
 * secret key in play, appear in no file of the broker's data directory, in no adapter's store and in no log
 * line, after referrals have gone end to end, been retried and been backed up; the canary does reach the
 * intake database (so the scan can find what it looks for). */
#define _GNU_SOURCE /* memmem */
#include <dirent.h>
#include <jansson.h>
#include <sodium.h>

#include "harness.h"

#define NEEDLES_MAX 64

typedef struct {
    char name[80];
    uint8_t bytes[128];
    size_t len;
} needle_t;

typedef struct {
    needle_t n[NEEDLES_MAX];
    int count;
} needles_t;

static void add_needle(needles_t *ns, const char *name, const void *bytes, size_t len)
{
    assert_true(ns->count < NEEDLES_MAX && len <= sizeof ns->n[0].bytes);
    needle_t *n = &ns->n[ns->count++];
    snprintf(n->name, sizeof n->name, "%s", name);
    memcpy(n->bytes, bytes, len);
    n->len = len;
}

/* A 32-byte secret as it could leak: raw, in hex, in base64 (without the padding, which depends on what
 * follows in a longer encoding). */
static void add_secret(needles_t *ns, const char *who, const char *what, const uint8_t *key)
{
    char name[80], hex[65], b64[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];
    snprintf(name, sizeof name, "%s %s (raw)", who, what);
    add_needle(ns, name, key, 32);
    sodium_bin2hex(hex, sizeof hex, key, 32);
    snprintf(name, sizeof name, "%s %s (hex)", who, what);
    add_needle(ns, name, hex, 64);
    sodium_bin2base64(b64, sizeof b64, key, 32, sodium_base64_VARIANT_ORIGINAL);
    snprintf(name, sizeof name, "%s %s (base64)", who, what);
    add_needle(ns, name, b64, 40);
}

static void add_identity(needles_t *ns, const identity_t *id)
{
    add_secret(ns, identity_card(id)->name, "signing seed", identity_sign_sk(id));
    add_secret(ns, identity_card(id)->name, "sealing key", identity_box_sk(id));
}

/* Fails the test if any needle is in the file; returns how many files were read. */
static int scan_file(const needles_t *ns, const char *path)
{
    size_t len;
    char *data = test_read_file(path, &len);
    if (data == NULL)
        return 0;
    for (int i = 0; i < ns->count; i++)
        if (memmem(data, len, ns->n[i].bytes, ns->n[i].len) != NULL)
            fail_msg("%s holds the %s", path, ns->n[i].name);
    free(data);
    return 1;
}

/* Every file below dir, but the secret files that are meant to hold a key. */
static int scan_tree(const needles_t *ns, const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char path[1200];
        test_path(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        assert_int_equal(lstat(path, &st), 0);
        size_t n = strlen(e->d_name);
        if (S_ISDIR(st.st_mode))
            files += scan_tree(ns, path);
        else if (S_ISREG(st.st_mode) && !(n > 7 && strcmp(e->d_name + n - 7, ".secret") == 0))
            files += scan_file(ns, path);
    }
    closedir(d);
    return files;
}

/* The sample referral with the canary in its narrative, dropped for the police adapter under name. */
static void drop_with_canary(harness_t *h, const char *canary, const char *rd_number, const char *name)
{
    json_error_t jerr;
    json_t *r = json_load_file("adapters/samples/valid/01-fatal-shooting.json", 0, &jerr);
    assert_non_null(r);
    char narrative[4096];
    snprintf(narrative, sizeof narrative, "%s Witness P3 (%s) saw the second agent reload.",
             json_string_value(json_object_get(r, "narrative")), canary);
    json_object_set_new(r, "narrative", json_string(narrative));
    json_object_set_new(r, "rdNumber", json_string(rd_number));
    char path[700];
    test_path(path, sizeof path, "%s/%s", h->dir, name);
    assert_int_equal(json_dump_file(r, path, 0), 0);
    json_decref(r);
    harness_drop(h, path, name);
}

static void nothing_leaks(void **state)
{
    (void)state;
    harness_t *h = harness_start("retry_base_ms = 100\n");
    int src = harness_adapter(h), snk = harness_adapter(h);
    uint8_t random[16];
    char canary[64], hex[33];
    randombytes_buf(random, sizeof random);
    sodium_bin2hex(hex, sizeof hex, random, sizeof random);
    snprintf(canary, sizeof canary, "CANARY-%s", hex);

    /* The first referral waits at the broker for a sink that is not there yet, and is retried after. */
    harness_adapter_start(h, src, "rms-files");
    drop_with_canary(h, canary, "JH600001", "first.json");
    harness_wait_count(h, "drop/sent", ".json", 1, 10000);
    harness_adapter_start(h, snk, "intake-sqlite");
    drop_with_canary(h, canary, "JH600002", "second.json");
    harness_wait_count(h, "drop/acks", ".json", 2, 30000);

    char path[700], cmd[2400];
    test_path(path, sizeof path, "%s/admin.secret", h->dir);
    assert_ok(identity_save(h->admin, path, NULL, 0, 0, 0, false));
    snprintf(cmd, sizeof cmd,
             "'%s/referral-admin' --broker '%s' --broker-card '%s/broker.card' --as '%s' backup --out "
             "'%s/backup.db' >/dev/null 2>>'%s/admin.log'",
             h->bin, h->endpoint, h->data, path, h->dir, h->dir);
    assert_int_equal(system(cmd), 0);

    harness_adapter_stop(h, src, SIGTERM);
    harness_adapter_stop(h, snk, SIGTERM);
    int status = harness_signal(h, SIGTERM);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* The scan finds a canary where one is: the intake system, whose job is to read the referral. */
    needles_t canary_only = {0};
    add_needle(&canary_only, "canary", canary, strlen(canary));
    size_t len;
    char *intake = test_read_file(test_path(path, sizeof path, "%s/intake.db", h->dir), &len);
    assert_non_null(intake);
    assert_non_null(memmem(intake, len, canary, strlen(canary)));
    free(intake);

    needles_t ns = canary_only;
    identity_t *broker;
    assert_ok(identity_load(&broker, test_path(path, sizeof path, "%s/broker.secret", h->data), NULL, 0));
    add_identity(&ns, broker);
    add_identity(&ns, h->cpd);
    add_identity(&ns, h->sao);
    add_identity(&ns, h->admin);
    identity_free(&broker);

    int files = scan_tree(&ns, h->data);
    for (int i = 0; i < 2; i++)
        files += scan_tree(&ns, test_path(path, sizeof path, "%s/adapter-%d-data", h->dir, i));
    files += scan_file(&ns, h->log);
    for (int i = 0; i < 2; i++)
        files += scan_file(&ns, h->adapters[i].log);
    files += scan_file(&ns, test_path(path, sizeof path, "%s/admin.log", h->dir));
    files += scan_file(&ns, test_path(path, sizeof path, "%s/backup.db", h->dir));
    /* broker.db and its card, two adapter stores and their locks, four logs and the backup at least. */
    assert_true(files >= 11);
    harness_stop(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(nothing_leaks, harness_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
