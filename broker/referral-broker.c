/* referral-broker -- creates a broker's data directory, and runs the broker.
 *
 *   referral-broker init --data DIR --name NAME --admin-card CARD [--days D]
 *   referral-broker run --data DIR [--config FILE] [--listen ENDPOINT]
 *   referral-broker restore --from FILE --data DIR [--force]
 *
 * Exit status: 0 success (run: stopped by SIGTERM or SIGINT), 1 refused input, 2 usage or system error. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "broker.h"
#include "config.h"
#include "ledger.h"
#include "log.h"
#include "restore.h"
#include "store.h"
#include "tool.h"

static const char usage[] =
    "usage: referral-broker COMMAND [OPTIONS]\n"
    "\n"
    "  init --data DIR --name NAME --admin-card CARD [--days D]\n"
    "      Creates DIR (mode 0700) with the broker's identity (DIR/broker.secret, unattended, and\n"
    "      DIR/broker.card, which every adapter needs), the database, and registers the first admin.\n"
    "  run --data DIR [--config FILE] [--listen ENDPOINT]\n"
    "      Runs the broker in the foreground until SIGTERM or SIGINT; logs key=value lines to stderr.\n"
    "  restore --from FILE --data DIR [--force]\n"
    "      Installs a backup (referral-admin backup) as DIR/broker.db after checking it: integrity, schema\n"
    "      version, the whole ledger against its signed checkpoints and the broker card it names (which\n"
    "      must be DIR/broker.card when that exists), the stored messages against the ledger. Creates DIR\n"
    "      (0700) if missing; replaces a database only with --force, keeping it as "
    "broker.db.before-restore.\n"
    "\n"
    "Exit status: 0 ok, 1 refused input, 2 usage or system error.\n";

enum { OPT_DATA = 1, OPT_NAME, OPT_ADMIN_CARD, OPT_DAYS, OPT_CONFIG, OPT_LISTEN, OPT_FROM, OPT_FORCE };

typedef struct {
    const char *data, *name, *admin_card, *days, *config, *listen, *from;
    bool force;
} options_t;

static void parse_options(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {
        {"data", required_argument, NULL, OPT_DATA},
        {"name", required_argument, NULL, OPT_NAME},
        {"admin-card", required_argument, NULL, OPT_ADMIN_CARD},
        {"days", required_argument, NULL, OPT_DAYS},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"from", required_argument, NULL, OPT_FROM},
        {"force", no_argument, NULL, OPT_FORCE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_DATA:
            xoption_once(&o->data, optarg, "--data");
            break;
        case OPT_NAME:
            xoption_once(&o->name, optarg, "--name");
            break;
        case OPT_ADMIN_CARD:
            xoption_once(&o->admin_card, optarg, "--admin-card");
            break;
        case OPT_DAYS:
            xoption_once(&o->days, optarg, "--days");
            break;
        case OPT_CONFIG:
            xoption_once(&o->config, optarg, "--config");
            break;
        case OPT_LISTEN:
            xoption_once(&o->listen, optarg, "--listen");
            break;
        case OPT_FROM:
            xoption_once(&o->from, optarg, "--from");
            break;
        case OPT_FORCE:
            o->force = true;
            break;
        case 'h':
            fputs(usage, stdout);
            exit(0);
        default:
            xdie(EXIT_USAGE, "bad option (see --help)");
        }
    }
    if (optind < argc)
        xdie(EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
}

static void data_path(char *out, size_t cap, const char *dir, const char *file)
{
    if (snprintf(out, cap, "%s/%s", dir, file) >= (int)cap)
        xdie(EXIT_USAGE, "--data path is too long");
}

static int cmd_init(const options_t *o)
{
    xrequire(o->data, "--data");
    xrequire(o->name, "--name");
    xrequire(o->admin_card, "--admin-card");
    card_t admin;
    rb_err rc = card_read_file(&admin, o->admin_card);
    if (rc != RB_OK)
        xfail(rc, o->admin_card);
    if (admin.role != CARD_ROLE_ADMIN)
        xdie(EXIT_VERIFY, "%s: not an admin card (role %s)", o->admin_card,
             card_role_name((card_role)admin.role));
    long days = o->days ? strtol(o->days, NULL, 10) : 365;
    if (days < 1 || days > 3660)
        xdie(EXIT_USAGE, "--days must be from 1 to 3660");
    if (mkdir(o->data, 0700) != 0)
        xdie(EXIT_USAGE, "%s: cannot create the data directory (it must not exist yet): %m", o->data);

    identity_t *me;
    rc = identity_generate(&me, o->name, CARD_ROLE_BROKER, admin.agency, (uint64_t)time(NULL),
                           (uint64_t)days * 86400);
    if (rc != RB_OK)
        xdie(EXIT_USAGE, "--name: %s (a-z 0-9 . _ -)", rb_strerror(rc));
    char secret[4096], card[4096], db[4096], err[512];
    data_path(secret, sizeof secret, o->data, BROKER_SECRET);
    data_path(card, sizeof card, o->data, BROKER_CARD);
    data_path(db, sizeof db, o->data, BROKER_DB);
    if ((rc = identity_save(me, secret, NULL, 0, 0, 0, false)) != RB_OK)
        xfail(rc, secret);
    if ((rc = card_write_file(identity_card(me), card, false)) != RB_OK)
        xfail(rc, card);
    store_t *store;
    if ((rc = store_open(&store, db, true, err, sizeof err)) != RB_OK)
        xdie(EXIT_USAGE, "%s", err);
    int64_t now = tool_now_ms();
    if ((rc = store_begin(store)) != RB_OK ||
        (rc = store_record_card(store, identity_card(me), "the broker's own card", now)) != RB_OK ||
        (rc = store_add_party(store, &admin, now)) != RB_OK)
        xfail(rc, db);
    /* The ledger starts with a signed checkpoint, so that even an idle broker's log is anchored. */
    char text[CARD_TEXT_MAX], note[NOTE_TEXT_MAX];
    size_t note_len;
    card_to_text(identity_card(me), text);
    if ((rc = ledger_set_meta(store_ledger(store), "broker_card", text)) != RB_OK ||
        (rc = ledger_checkpoint_now(store_ledger(store), identity_card(me), identity_sign_sk(me), now, note,
                                    &note_len)) != RB_OK ||
        (rc = store_commit(store)) != RB_OK)
        xfail(rc, db);
    store_close(&store);
    printf("initialised %s: broker %s, card %s, admin %s\n", o->data, o->name, card, admin.name);
    identity_free(&me);
    return 0;
}

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static int cmd_run(const options_t *o)
{
    xrequire(o->data, "--data");
    broker_config_t cfg;
    char err[512], secret[4096], db[4096];
    config_defaults(&cfg);
    if (o->config != NULL && config_load(&cfg, o->config, err, sizeof err) != RB_OK)
        xdie(EXIT_USAGE, "%s", err);
    if (o->listen != NULL)
        snprintf(cfg.listen, sizeof cfg.listen, "%s", o->listen);
    data_path(secret, sizeof secret, o->data, BROKER_SECRET);
    data_path(db, sizeof db, o->data, BROKER_DB);
    identity_t *me = xload_identity(secret, NULL);
    store_t *store;
    rb_err rc = store_open(&store, db, false, err, sizeof err);
    if (rc != RB_OK)
        xdie(EXIT_USAGE, "cannot use the database: %s", err);
    /* No SA_RESTART: the signal must interrupt zmq_poll so the loop sees the flag at once. */
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    rc = broker_run(&cfg, me, store, &stopping);
    store_close(&store);
    identity_free(&me);
    if (rc != RB_OK)
        xdie(EXIT_USAGE, "broker stopped: %s", rb_strerror(rc));
    return 0;
}

static int cmd_restore(const options_t *o)
{
    xrequire(o->from, "--from");
    xrequire(o->data, "--data");
    restore_summary_t summary;
    char err[1024];
    rb_err rc = restore_backup(o->from, o->data, o->force, &summary, err, sizeof err);
    if (rc != RB_OK)
        xdie(tool_exit_code(rc), "restore refused: %s", err);
    restore_print(&summary, o->from, o->data, stdout);
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = tool_start(argc, argv, usage);
    options_t o;
    parse_options(argc - 1, argv + 1, &o);
    if (strcmp(cmd, "init") == 0)
        return cmd_init(&o);
    if (strcmp(cmd, "run") == 0)
        return cmd_run(&o);
    if (strcmp(cmd, "restore") == 0)
        return cmd_restore(&o);
    xdie(EXIT_USAGE, "unknown command '%s' (see --help)", cmd);
}
