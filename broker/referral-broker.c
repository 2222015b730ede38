/* referral-broker -- creates a broker's data directory, and runs the broker.
 *
 *   referral-broker init --data DIR --name NAME --admin-card CARD [--days D]
 *   referral-broker run --data DIR [--config FILE] [--listen ENDPOINT] [--metrics ADDRESS]
 *                       [--log-format F] [--log-level L]
 *   referral-broker restore --from FILE --data DIR [--force]
 *
 * Exit status: 0 success (run: stopped by SIGTERM or SIGINT; SIGHUP is logged and ignored), 1 refused input,
 * 2 usage, config or a mistake starting again cannot mend, 3 a run's failure that may pass. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "config.h"
#include "fsmode.h"
#include "ledger.h"
#include "log.h"
#include "metrics.h"
#include "restore.h"
#include "store.h"
#include "tool.h"
#include "wire.h"

/* --help, laid out as a manual page, which make install turns into referral-broker(1) with
 * broker/dist/help-to-man.sh. A new command is one more block under COMMANDS, with its options under
 * OPTIONS and an example under EXAMPLES. */
static const char usage[] =
    "NAME\n"
    "    referral-broker - create a broker's data directory, and run the broker\n"
    "\n"
    "SYNOPSIS\n"
    "    referral-broker init --data DIR --name NAME --admin-card CARD [--days D]\n"
    "    referral-broker run --data DIR [--config FILE] [--listen ENDPOINT] [--metrics ADDRESS]\n"
    "                        [--log-format text|json] [--log-level debug|info|warn|error]\n"
    "    referral-broker restore --from FILE --data DIR [--force]\n"
    "    referral-broker --help\n"
    "\n"
    "DESCRIPTION\n"
    "    The broker carries signed and sealed referral envelopes between registered adapters over\n"
    "    ZeroMQ with CURVE. It stores each envelope before it answers with a signed receipt, delivers\n"
    "    it until the recipient confirms (dead-lettering it after the retry limit or the time to live),\n"
    "    and records every event in a Merkle-tree audit ledger with signed checkpoints. It cannot read\n"
    "    a referral. It is administered with referral-admin, over the same socket.\n"
    "\n"
    "COMMANDS\n"
    "    init\n"
    "        Creates DIR (mode 0700; it must not exist yet, or be empty) with the broker's identity\n"
    "        (an unattended key, without passphrase, valid for D days, default 365), its database and\n"
    "        the ledger's first signed checkpoint, and registers the holder of CARD (a card of role\n"
    "        admin) as the first admin. Every adapter and admin needs a copy of DIR/broker.card.\n"
    "    run\n"
    "        Runs the broker in the foreground. The database migrates itself to this version's schema\n"
    "        at start. On SIGTERM or SIGINT it stores and answers what it has received, signs a last\n"
    "        checkpoint and exits 0; SIGHUP is logged and ignored (settings are read at start). Logs\n"
    "        go to standard error, one event a line. A start that fails ledgers nothing.\n"
    "    restore\n"
    "        Installs a backup (referral-admin backup) as DIR/broker.db after checking it: SQLite\n"
    "        integrity, schema version, the whole ledger against its signed checkpoints and the broker\n"
    "        card it names (which must be DIR/broker.card when that exists), and the stored messages\n"
    "        against the ledger. Creates DIR (0700) if missing. Replaces a database only with --force,\n"
    "        keeping the old one as DIR/broker.db.before-restore. The broker must be stopped. Run\n"
    "        as root, it gives the database to the owner of DIR.\n"
    "\n"
    "OPTIONS\n"
    "    --data DIR             the broker's data directory\n"
    "    --name NAME            init: the broker's name (a-z 0-9 . _ -, starting with a letter or digit)\n"
    "    --admin-card CARD      init: the first admin's card (referral-keys generate --role admin)\n"
    "    --days D               init: how long the broker's key is valid, 1 to 3660 days (default 365)\n"
    "    --config FILE          run: an INI file of settings (see broker.conf among the examples);\n"
    "                           without it, the defaults; an unknown setting is an error\n"
    "    --listen ENDPOINT      run: the ZeroMQ endpoint to bind, over the config's [broker] listen\n"
    "                           (default tcp://127.0.0.1:7450; tcp://127.0.0.1:* picks a free port)\n"
    "    --metrics ADDRESS      run: HOST:PORT of the Prometheus endpoint over [metrics] listen\n"
    "                           (default 127.0.0.1:9464; port 0 picks a free port; off disables)\n"
    "    --log-format FORMAT    run: text (key=value, the default) or json (one object a line)\n"
    "    --log-level LEVEL      run: the lowest level written: debug, info (default), warn or error;\n"
    "                           security events (security=1) are always written\n"
    "    --from FILE            restore: the backup to install\n"
    "    --force                restore: replace an existing database\n"
    "    --help                 this text\n"
    "\n"
    "FILES\n"
    "    DIR/broker.secret      the broker's secret keys (mode 0600)\n"
    "    DIR/broker.card        the broker's public card\n"
    "    DIR/broker.db          SQLite (WAL): registry, messages, delivery state and the audit ledger,\n"
    "                           locked while the broker runs\n"
    "    /etc/referral/broker.conf\n"
    "                           the settings, as the systemd unit referral-broker.service runs it\n"
    "\n"
    "EXIT STATUS\n"
    "    0  done (run: stopped by SIGTERM or SIGINT)\n"
    "    1  refused input (init: CARD is not an admin's card, is expired, or fails verification)\n"
    "    2  a mistake starting again cannot mend (a bad option or setting, named with its file and line;\n"
    "       DIR not initialised, a database of another schema or layout, a corrupt one, an altered\n"
    "       ledger): the unit does not restart on it (RestartPreventExitStatus=2)\n"
    "    3  run: a failure that may pass (a port in use, the database busy or unreadable, the disk\n"
    "       full): the unit restarts on it\n"
    "\n"
    "EXAMPLES\n"
    "    referral-keys generate --name ops-admin --role admin --agency ILCPD0000 --out ops-admin\n"
    "    referral-broker init --data /var/lib/referral/broker --name broker-1 --admin-card ops-admin.card\n"
    "    referral-broker run --data /var/lib/referral/broker --config /etc/referral/broker.conf\n"
    "    referral-broker run --data ./broker --listen 'tcp://127.0.0.1:*' --log-format json 2>broker.log\n"
    "    referral-broker restore --from broker-20261125.db --data /var/lib/referral/broker --force\n"
    "\n"
    "SEE ALSO\n"
    "    referral-admin(1), referral-adapter(1), referral-keys(1), referral-audit(1)\n";

enum {
    OPT_DATA = 1,
    OPT_NAME,
    OPT_ADMIN_CARD,
    OPT_DAYS,
    OPT_CONFIG,
    OPT_LISTEN,
    OPT_LOG_FORMAT,
    OPT_LOG_LEVEL,
    OPT_METRICS,
    OPT_FROM,
    OPT_FORCE
};

typedef struct {
    const char *data, *name, *admin_card, *days, *config, *listen, *log_format, *log_level, *metrics, *from;
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
        {"metrics", required_argument, NULL, OPT_METRICS},
        {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
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
        case OPT_METRICS:
            xoption_once(&o->metrics, optarg, "--metrics");
            break;
        case OPT_LOG_FORMAT:
            xoption_once(&o->log_format, optarg, "--log-format");
            break;
        case OPT_LOG_LEVEL:
            xoption_once(&o->log_level, optarg, "--log-level");
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

/* Whether PATH is a directory with nothing in it; if not, errno says why. */
static bool dir_is_empty(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return false;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL && (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0))
        ;
    closedir(d);
    errno = e == NULL ? 0 : ENOTEMPTY;
    return e == NULL;
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
    /* A broker whose only admin cannot connect could never be administered. */
    if (card_valid_at(&admin, (uint64_t)time(NULL)) != RB_OK) {
        char from[CARD_TIME_TEXT], to[CARD_TIME_TEXT];
        card_time_text(admin.created, from);
        card_time_text(admin.expires, to);
        if (admin.created > (uint64_t)time(NULL))
            xdie(EXIT_VERIFY, "%s: the card is valid only from %s: check this machine's clock", o->admin_card,
                 from);
        xdie(EXIT_VERIFY,
             "%s: the card expired on %s: make the admin a new one (referral-keys generate --role admin)",
             o->admin_card, to);
    }
    long days = o->days ? strtol(o->days, NULL, 10) : 365;
    if (days < 1 || days > 3660)
        xdie(EXIT_USAGE, "--days must be from 1 to 3660");
    /* An empty DIR is taken too: the one the operator made for the broker's own user (install -d -o
     * referral-broker), who may not write its parent, as StateDirectory= makes it. */
    char err[512];
    if (mkdir(o->data, 0700) != 0 && (errno != EEXIST || !dir_is_empty(o->data)))
        xdie(EXIT_USAGE, "%s: cannot create the data directory (it must not exist yet, or be empty): %m",
             o->data);
    if (fsmode_dir(o->data, 0700, 0700, NULL, err, sizeof err) != RB_OK)
        xdie(EXIT_USAGE, "%s", err);

    identity_t *me;
    rc = identity_generate(&me, o->name, CARD_ROLE_BROKER, admin.agency, (uint64_t)time(NULL),
                           (uint64_t)days * 86400);
    if (rc != RB_OK)
        xdie(EXIT_USAGE, "--name: %s (a-z 0-9 . _ -)", rb_strerror(rc));
    char secret[4096], card[4096], db[4096];
    data_path(secret, sizeof secret, o->data, BROKER_SECRET);
    data_path(card, sizeof card, o->data, BROKER_CARD);
    data_path(db, sizeof db, o->data, BROKER_DB);
    if ((rc = identity_save(me, secret, NULL, 0, 0, 0, false)) != RB_OK)
        xfail(rc, secret);
    if ((rc = card_write_file(identity_card(me), card, false)) != RB_OK)
        xfail(rc, card);
    store_t *store;
    if (store_open(&store, db, true, err, sizeof err) != RB_OK)
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

static int cmd_run(const options_t *o)
{
    xrequire(o->data, "--data");
    xlog_options(o->log_format, o->log_level);
    broker_config_t cfg;
    char err[512], secret[4096], db[4096];
    config_defaults(&cfg);
    if (o->config != NULL && config_load(&cfg, o->config, err, sizeof err) != RB_OK)
        xdie(EXIT_USAGE, "%s", err);
    if (o->listen != NULL &&
        (strlen(o->listen) >= sizeof cfg.listen || !wire_endpoint_valid(o->listen, true)))
        xdie(EXIT_USAGE, "--listen %s: %s", o->listen, WIRE_ENDPOINT_FORM);
    if (o->listen != NULL)
        snprintf(cfg.listen, sizeof cfg.listen, "%s", o->listen);
    if (o->metrics != NULL && !metrics_listen_valid(o->metrics))
        xdie(EXIT_USAGE, "--metrics %s", METRICS_LISTEN_FORM);
    if (o->metrics != NULL)
        snprintf(cfg.metrics_listen, sizeof cfg.metrics_listen, "%s", o->metrics);
    data_path(secret, sizeof secret, o->data, BROKER_SECRET);
    data_path(db, sizeof db, o->data, BROKER_DB);
    if (access(secret, F_OK) != 0 && errno == ENOENT)
        xdie(EXIT_USAGE, "%s: not a broker's data directory (no %s): make one with referral-broker init",
             o->data, BROKER_SECRET);
    identity_t *me = xload_identity(secret, NULL);
    if (fsmode_dir(o->data, 0700, 0700, NULL, err, sizeof err) != RB_OK)
        xdie(EXIT_USAGE, "%s", err);
    store_t *store;
    const volatile sig_atomic_t *stopping = xdaemon_signals();
    rb_err rc = store_open(&store, db, false, err, sizeof err);
    if (rc !=
        RB_OK) /* another schema or a corrupt file: 2; busy (its old process still stopping) or I/O: 3 */
        xdie(rc == RB_ERR_IO || rc == RB_ERR_BUSY ? EXIT_RETRY : EXIT_USAGE, "cannot use the database: %s",
             err);
    rc = broker_run(&cfg, me, store, stopping);
    store_close(&store);
    identity_free(&me);
    if (rc == RB_ERR_HASH_MISMATCH)
        xdie(EXIT_USAGE,
             "broker stopped: the ledger in %s was altered (event=ledger_inconsistent in the log names "
             "where): restore a backup (referral-broker restore), and keep this database for the inquiry",
             db);
    if (rc != RB_OK) /* a port in use, the disk full: the log has the line naming it */
        xdie(EXIT_RETRY, "the broker did not run on: %s (the error logged before this names the cause)",
             rb_strerror(rc));
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
