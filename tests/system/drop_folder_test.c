/* drop_folder_test.c -- the police drop folder as an attacker with write access to it would use it: a real
 * broker, a `referral-adapter` on rms-files and one on intake-sqlite. What is not a file the records system
 * wrote into the folder (a symbolic link to a referral elsewhere, a FIFO, a directory, a socket) is never
 * sealed or sent and is moved to rejected/ with the reason; a link flipped between a file and a FIFO while
 * the adapter scans never hangs it; and folders of the drop folder replaced by links are never written
 * through. */
#define _GNU_SOURCE /* renameat2 and RENAME_EXCHANGE, for the flipping link */
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "harness.h"

/* A referral that is not in the drop folder: the one an attacker's link points at (sample 02). */
#define OUTSIDE_SAMPLE "adapters/samples/valid/02-night-raid-south-shore.json"
#define OUTSIDE_RD     "JH517902"
/* The valid export dropped after the attack (sample 03). */
#define AFTER_RD "JH523718"

/* How long the names flip. On f5a4222 the adapter hung in 7 runs of 10 at 3 s and in 5 of 5 at 8 s with
 * flip.json alone, and in 13 of 13 at 10 s with all three. */
#define FLIP_MS 10000

static int64_t intake_int(harness_t *h, const char *sql)
{
    char path[700];
    return harness_db_int(test_path(path, sizeof path, "%s/intake.db", h->dir), sql);
}

static int64_t outbox_int(harness_t *h, int adapter, const char *sql)
{
    char path[700];
    return harness_db_int(test_path(path, sizeof path, "%s/adapter-%d-data/adapter.db", h->dir, adapter),
                          sql);
}

/* Whether adapter i's log holds needle. */
static bool logged(harness_t *h, int i, const char *needle)
{
    size_t len;
    char *log = test_read_file(h->adapters[i].log, &len);
    bool found = log != NULL && strstr(log, needle) != NULL;
    free(log);
    return found;
}

static void wait_logged(harness_t *h, int i, const char *needle, int timeout_ms)
{
    for (int64_t deadline = harness_deadline(timeout_ms); !logged(h, i, needle); harness_sleep_ms(50))
        if (harness_ms() > deadline)
            fail_msg("adapter %d did not log %s within %d ms; see %s", i, needle, timeout_ms,
                     h->adapters[i].log);
}

/* Waits until the intake has filed the case of RD number rd; fails after timeout_ms. */
static void wait_filed(harness_t *h, const char *rd, int timeout_ms)
{
    char sql[200], path[700];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM cases WHERE rd_number = '%s'", rd);
    test_path(path, sizeof path, "%s/intake.db", h->dir);
    for (int64_t deadline = harness_deadline(timeout_ms);
         access(path, F_OK) != 0 ||
         harness_db_int(path, "SELECT count(*) FROM sqlite_master WHERE name = 'cases'") < 1 ||
         intake_int(h, sql) < 1;
         harness_sleep_ms(50))
        if (harness_ms() > deadline)
            fail_msg("%s was not filed within %d ms; see %s and %s", rd, timeout_ms, h->adapters[0].log,
                     h->adapters[1].log);
}

/* The file type of path itself (never followed), or 0 when nothing is there. */
static mode_t type_at(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 ? st.st_mode & S_IFMT : 0;
}

/* How many entries of dir other than . and .. */
static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* The referral elsewhere on the host, old enough that stable_ms never holds it back. */
static void outside_referral(harness_t *h, char *path, size_t cap)
{
    char cmd[1500];
    test_path(path, cap, "%s/outside", h->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    test_path(path, cap, "%s/outside/referral.json", h->dir);
    test_path(cmd, sizeof cmd, "cp '%s' '%s' && touch -d '1 hour ago' '%s'", OUTSIDE_SAMPLE, path, path);
    assert_int_equal(system(cmd), 0);
}

/* A symbolic link to a referral elsewhere, a dangling link, a FIFO, a directory and a socket, each named
 * like an export: none is read or sent, each is moved to rejected/ (a link as the link) with the reason
 * beside it, and the adapter goes on to take the valid export dropped after them. */
static void what_is_not_a_file_is_refused(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    int src = harness_adapter(h), snk = harness_adapter(h);
    char outside[700], path[700], cmd[1500];
    outside_referral(h, outside, sizeof outside);
    mkdir(test_path(path, sizeof path, "%s/drop", h->dir), 0700);
    assert_int_equal(symlink(outside, test_path(path, sizeof path, "%s/drop/linked.json", h->dir)), 0);
    assert_int_equal(
        symlink("/nonexistent/referral.json", test_path(path, sizeof path, "%s/drop/dangling.json", h->dir)),
        0);
    assert_int_equal(mkfifo(test_path(path, sizeof path, "%s/drop/fifo.json", h->dir), 0600), 0);
    assert_int_equal(mkdir(test_path(path, sizeof path, "%s/drop/dir.json", h->dir), 0700), 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    test_path(addr.sun_path, sizeof addr.sun_path, "%s/drop/sock.json", h->dir);
    int sock = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(sock >= 0);
    assert_int_equal(bind(sock, (struct sockaddr *)&addr, sizeof addr), 0);
    harness_adapter_start(h, src, "rms-files");
    harness_adapter_start(h, snk, "intake-sqlite");
    /* Named to sort last: taken in the same scan as the others, or a later one. */
    harness_drop(h, "adapters/samples/valid/03-clash-detentions.json", "zz-after.json");
    wait_filed(h, AFTER_RD, 30000);
    assert_int_equal(outbox_int(h, src, "SELECT count(*) FROM outbox WHERE rd_number = '" OUTSIDE_RD "'"), 0);
    assert_int_equal(intake_int(h, "SELECT count(*) FROM cases WHERE rd_number = '" OUTSIDE_RD "'"), 0);
    assert_int_equal(intake_int(h, "SELECT count(*) FROM filings"), 1);
    static const struct {
        const char *name;
        mode_t type;
        const char *reason;
    } refused[] = {
        {"linked.json", S_IFLNK, "symbolic link"},
        {"dangling.json", S_IFLNK, "symbolic link"},
        {"fifo.json", S_IFIFO, "FIFO"},
        {"dir.json", S_IFDIR, "directory"},
        {"sock.json", S_IFSOCK, "socket"},
    };
    harness_wait_count(h, "drop/rejected", ".errors.txt", 5, 10000);
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        if (type_at(test_path(path, sizeof path, "%s/drop/%s", h->dir, refused[i].name)) != 0)
            fail_msg("%s is still in the drop folder", refused[i].name);
        if (type_at(test_path(path, sizeof path, "%s/drop/rejected/%s", h->dir, refused[i].name)) !=
            refused[i].type)
            fail_msg("%s is not in rejected/ as it was", refused[i].name);
        test_path(cmd, sizeof cmd, "grep -q 'not a regular file: a %s' '%s/drop/rejected/%s.errors.txt'",
                  refused[i].reason, h->dir, refused[i].name);
        if (system(cmd) != 0)
            fail_msg("rejected/%s.errors.txt does not say it is a %s", refused[i].name, refused[i].reason);
        test_path(cmd, sizeof cmd, "grep 'event=export_not_a_file' '%s' | grep -q 'file=%s'",
                  h->adapters[src].log, refused[i].name);
        if (system(cmd) != 0)
            fail_msg("no export_not_a_file line names %s", refused[i].name);
    }
    /* The link was moved, never followed: the referral it pointed at is where it was. */
    assert_int_equal(type_at(outside), S_IFREG);
    close(sock);
    harness_adapter_stop(h, src, SIGTERM);
    harness_adapter_stop(h, snk, SIGTERM);
    harness_stop(&h);
}

enum { INVALID_FILE, FIFO, LINK_OUT };

/* Makes path an entry of that kind: an invalid export (rejected when read), a FIFO, or a symbolic link to
 * target. */
static void make_entry(const char *path, int kind, const char *target)
{
    static const char invalid[] = "{\"schemaVersion\": 1, \"agencyOri\": \"ILCPD0000\"}\n";
    int fd;
    if (kind == FIFO)
        (void)mkfifo(path, 0600);
    else if (kind == LINK_OUT)
        (void)symlink(target, path);
    else if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600)) >= 0) {
        (void)!write(fd, invalid, sizeof invalid - 1);
        close(fd);
    }
}

/* An export's name swapped with a dot name (never read) in one rename: one of the two an invalid export,
 * the other of kind other. When the adapter has moved one away, it is made again, of the kind missing. */
static void swap_entries(const char *name, const char *dot, int other, const char *target)
{
    struct stat st;
    if (renameat2(AT_FDCWD, name, AT_FDCWD, dot, RENAME_EXCHANGE) == 0)
        return;
    bool at_name = lstat(name, &st) == 0, name_is_file = at_name && S_ISREG(st.st_mode);
    bool at_dot = lstat(dot, &st) == 0, dot_is_file = at_dot && S_ISREG(st.st_mode);
    if (!at_name)
        make_entry(name, at_dot && dot_is_file ? other : INVALID_FILE, target);
    if (!at_dot)
        make_entry(dot, at_name && name_is_file ? other : INVALID_FILE, target);
}

/* Three attacks at once, as fast as it can, for ms milliseconds, each a name that is one thing when looked
 * at and another when opened; an open() of a FIFO waits for a writer that never comes.
 *   drop/flip.json: a symbolic link to outside/target, which is the referral elsewhere and a FIFO by turns
 *     (swapped with outside/other in one rename), made again whenever the adapter has moved it away;
 *   drop/flop.json: an invalid export and a FIFO by turns;
 *   drop/flap.json: an invalid export and a symbolic link to outside/target by turns. */
static pid_t start_flipping(harness_t *h, const char *referral, int ms)
{
    char link[700], target[700], other[700], flop[700], flop_dot[700], flap[700], flap_dot[700];
    test_path(link, sizeof link, "%s/drop/flip.json", h->dir);
    test_path(target, sizeof target, "%s/outside/target", h->dir);
    test_path(other, sizeof other, "%s/outside/other", h->dir);
    test_path(flop, sizeof flop, "%s/drop/flop.json", h->dir);
    test_path(flop_dot, sizeof flop_dot, "%s/drop/.flop", h->dir);
    test_path(flap, sizeof flap, "%s/drop/flap.json", h->dir);
    test_path(flap_dot, sizeof flap_dot, "%s/drop/.flap", h->dir);
    assert_int_equal(rename(referral, target), 0);
    assert_int_equal(mkfifo(other, 0600), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct stat st;
        for (int64_t end = harness_ms() + ms; harness_ms() < end;) {
            for (int i = 0; i < 64; i++) {
                (void)renameat2(AT_FDCWD, target, AT_FDCWD, other, RENAME_EXCHANGE);
                swap_entries(flop, flop_dot, FIFO, target);
                swap_entries(flap, flap_dot, LINK_OUT, target);
            }
            if (lstat(link, &st) != 0)
                (void)symlink(target, link);
        }
        _exit(0);
    }
    return pid;
}

/* A link in the drop folder to a file elsewhere that flips between a referral and a FIFO for FLIP_MS while
 * the adapter scans: the adapter never hangs (a valid export dropped afterwards is filed within the bound),
 * and the referral elsewhere is never sent. */
static void flipping_link_never_hangs_the_adapter(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    int src = harness_adapter(h), snk = harness_adapter(h);
    char outside[700], path[700];
    outside_referral(h, outside, sizeof outside);
    mkdir(test_path(path, sizeof path, "%s/drop", h->dir), 0700);
    harness_adapter_start(h, src, "rms-files");
    harness_adapter_start(h, snk, "intake-sqlite");
    wait_logged(h, src, "event=connected", 15000);
    pid_t flipper = start_flipping(h, outside, FLIP_MS);
    int status;
    for (int64_t deadline = harness_deadline(FLIP_MS + 30000); waitpid(flipper, &status, WNOHANG) == 0;
         harness_sleep_ms(50))
        if (harness_ms() > deadline) {
            kill(flipper, SIGKILL);
            waitpid(flipper, &status, 0);
            fail_msg("the flipping process did not end");
        }
    harness_drop(h, "adapters/samples/valid/03-clash-detentions.json", "zz-after.json");
    wait_filed(h, AFTER_RD, 30000);
    /* What the flipping left behind was dealt with in that scan or an earlier one. */
    assert_int_equal(type_at(test_path(path, sizeof path, "%s/drop/flip.json", h->dir)), 0);
    assert_int_equal(type_at(test_path(path, sizeof path, "%s/drop/flop.json", h->dir)), 0);
    assert_int_equal(type_at(test_path(path, sizeof path, "%s/drop/flap.json", h->dir)), 0);
    int counts[5];
    static const char *const greps[] = {"flip.json*.errors.txt | xargs grep -l 'a symbolic link'",
                                        "flop.json*.errors.txt | xargs grep -l 'a FIFO'",
                                        "flop.json*.errors.txt | xargs grep -l 'required'",
                                        "flap.json*.errors.txt | xargs grep -l 'a symbolic link'",
                                        "flap.json*.errors.txt | xargs grep -l 'required'"};
    for (int i = 0; i < 5; i++) {
        char cmd[1200];
        test_path(cmd, sizeof cmd, "cd '%s/drop/rejected' && ls %s | wc -l", h->dir, greps[i]);
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        assert_int_equal(fscanf(p, "%d", &counts[i]), 1);
        pclose(p);
    }
    print_message("# in %d ms of flipping, refused or rejected: flip.json %d times as a link; flop.json %d "
                  "times as a FIFO, %d as invalid; flap.json %d times as a link, %d as invalid\n",
                  FLIP_MS, counts[0], counts[1], counts[2], counts[3], counts[4]);
    for (int i = 0; i < 5; i++)
        assert_true(counts[i] >= 1);
    assert_int_equal(outbox_int(h, src, "SELECT count(*) FROM outbox WHERE rd_number = '" OUTSIDE_RD "'"), 0);
    assert_int_equal(intake_int(h, "SELECT count(*) FROM cases WHERE rd_number = '" OUTSIDE_RD "'"), 0);
    assert_int_equal(intake_int(h, "SELECT count(*) FROM filings"), 1);
    harness_adapter_stop(h, src, SIGTERM);
    harness_adapter_stop(h, snk, SIGTERM);
    harness_stop(&h);
}

/* sent/ and acks/ replaced by links to folders elsewhere while the adapter runs: the export is not moved
 * through the link, nor the ACK written through it; both wait, logged, until the folders are put back. A
 * restart with a link in place refuses to start, naming it. */
static void folders_replaced_by_links_are_not_written_through(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    int src = harness_adapter(h), snk = harness_adapter(h);
    char path[700], link[700], away[700], cmd[1500];
    harness_adapter_start(h, src, "rms-files");
    harness_adapter_start(h, snk, "intake-sqlite");
    wait_logged(h, src, "event=connected", 15000);
    static const char *const subs[] = {"sent", "acks"};
    for (int i = 0; i < 2; i++) {
        test_path(link, sizeof link, "%s/drop/%s", h->dir, subs[i]);
        test_path(away, sizeof away, "%s/elsewhere-%s", h->dir, subs[i]);
        assert_int_equal(mkdir(away, 0700), 0);
        assert_int_equal(rmdir(link), 0);
        assert_int_equal(symlink(away, link), 0);
    }
    harness_drop(h, "adapters/samples/valid/03-clash-detentions.json", NULL);
    /* Filed at the intake, so the ACK is on its way back; then either it and the export went through the
     * links, or the adapter said it would not. */
    for (int64_t deadline = harness_deadline(30000);
         !(logged(h, src, "event=ack_write_failed") && logged(h, src, "event=move_failed"));
         harness_sleep_ms(50)) {
        if (entries(test_path(away, sizeof away, "%s/elsewhere-acks", h->dir)) > 0)
            fail_msg("the ACK was written through the link drop/acks into %s", away);
        if (entries(test_path(away, sizeof away, "%s/elsewhere-sent", h->dir)) > 0)
            fail_msg("the export was moved through the link drop/sent into %s", away);
        if (harness_ms() > deadline)
            fail_msg("no move_failed and ack_write_failed within 30 s; see %s", h->adapters[src].log);
    }
    assert_int_equal(entries(test_path(away, sizeof away, "%s/elsewhere-acks", h->dir)), 0);
    assert_int_equal(entries(test_path(away, sizeof away, "%s/elsewhere-sent", h->dir)), 0);
    assert_int_equal(type_at(test_path(path, sizeof path, "%s/drop/03-clash-detentions.json", h->dir)),
                     S_IFREG);
    assert_int_equal(intake_int(h, "SELECT count(*) FROM filings"), 1);
    /* A restart finds the links: it refuses to start, and says which and what to do. */
    harness_adapter_stop(h, src, SIGTERM);
    harness_adapter_start(h, src, "rms-files");
    int status;
    for (int64_t deadline = harness_deadline(15000); waitpid(h->adapters[src].pid, &status, WNOHANG) == 0;
         harness_sleep_ms(50))
        if (harness_ms() > deadline)
            fail_msg("the adapter started with drop/sent a symbolic link");
    h->adapters[src].pid = 0;
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 2);
    test_path(cmd, sizeof cmd, "grep -q 'drop/sent: a symbolic link, not a folder: remove it' '%s'",
              h->adapters[src].log);
    assert_int_equal(system(cmd), 0);
    /* The operator removes the links; the adapter makes the folders, and both wait no longer. */
    for (int i = 0; i < 2; i++)
        assert_int_equal(unlink(test_path(link, sizeof link, "%s/drop/%s", h->dir, subs[i])), 0);
    harness_adapter_start(h, src, "rms-files");
    harness_wait_count(h, "drop/acks", ".json", 1, 30000);
    harness_wait_count(h, "drop/sent", ".json", 1, 10000);
    assert_int_equal(outbox_int(h, src, "SELECT count(*) FROM outbox"), 1);
    harness_adapter_stop(h, src, SIGTERM);
    harness_adapter_stop(h, snk, SIGTERM);
    harness_stop(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(what_is_not_a_file_is_refused, harness_teardown),
        cmocka_unit_test_teardown(flipping_link_never_hangs_the_adapter, harness_teardown),
        cmocka_unit_test_teardown(folders_replaced_by_links_are_not_written_through, harness_teardown),
    };
    return cmocka_run_group_tests_name("drop_folder", tests, NULL, NULL);
}
