/* referral-adapter -- runs one adapter (a connector between an agency's system and the broker).
 *
 *   referral-adapter [run] --config FILE [--log-format F] [--log-level L]   until SIGTERM or SIGINT
 *   referral-adapter status --config FILE [--id MESSAGE_ID]
 *
 * docs/ADAPTERS.md describes the config file and each connector.
 * Exit status: 0 ok, 1 refused, 2 usage, config or start-up error, 3 a run's failure that may pass. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "tool.h"

/* --help, laid out as a manual page, which make install turns into referral-adapter(1) with
 * broker/dist/help-to-man.sh. A new command is one more block under COMMANDS, with its options under
 * OPTIONS and an example under EXAMPLES. */
static const char usage[] =
    "NAME\n"
    "    referral-adapter - connect an agency's system to the broker: send referrals, or file them\n"
    "\n"
    "SYNOPSIS\n"
    "    referral-adapter [run] --config FILE [--log-format text|json] [--log-level LEVEL]\n"
    "    referral-adapter status --config FILE [--id MESSAGE_ID]\n"
    "    referral-adapter --help\n"
    "\n"
    "DESCRIPTION\n"
    "    An adapter runs one connector with one identity and its own SQLite store. A source connector\n"
    "    (rms-files, rms-http) takes referrals exported by a police records system, validates, signs\n"
    "    and seals each to the recipient, keeps it in its outbox and submits it until the broker's\n"
    "    signed receipt is stored. A sink connector (intake-files, intake-sqlite) stores each delivery\n"
    "    before confirming it, opens and verifies it, files it into the intake system and answers with\n"
    "    a signed ACK. Nothing taken is lost while the broker or the intake system is down. The config\n"
    "    file is described in docs/ADAPTERS.md and in the example configs.\n"
    "\n"
    "COMMANDS\n"
    "    run (the default)\n"
    "        Runs the adapter in the foreground until SIGTERM or SIGINT, then exits 0 (SIGHUP is\n"
    "        logged and ignored: the config is read at start). Its store\n"
    "        migrates itself to this version's schema at start. Logs go to standard error, one event a\n"
    "        line, each with adapter=NAME. Only one adapter runs on a data directory at a time.\n"
    "    status\n"
    "        Prints the store's counts as one JSON object (queued, awaitingAck, accepted, rejected,\n"
    "        overdueReceipt, overdueAck, inboxWaiting, filed, refused, checkpoints, ledgerAlarms,\n"
    "        lastLedgerAlarm), or with --id the history of one message. Reads the store without\n"
    "        locking it, so it works while the adapter runs.\n"
    "\n"
    "OPTIONS\n"
    "    --config FILE          the adapter's INI config; an unknown section or setting is an error\n"
    "    --id MESSAGE_ID        status: one message, as 32 hex digits\n"
    "    --log-format FORMAT    run: text (key=value, the default) or json (one object a line)\n"
    "    --log-level LEVEL      run: the lowest level written: debug, info (default), warn or error;\n"
    "                           security events (security=1) are always written\n"
    "    --help                 this text\n"
    "\n"
    "FILES\n"
    "    FILE                   [adapter] connector, secret, previous_secret, broker, broker_card,\n"
    "                           trust, recipient (sources), data, receipt_deadline_ms, ack_deadline_ms,\n"
    "                           metrics_file; a section named after the connector; and [publish]\n"
    "                           (sources, for referral-publish)\n"
    "    DATA/adapter.db        outbox, inbox, receipts, ACKs, the broker's checkpoints, ledger alarms\n"
    "    DATA/adapter.lock      held while the adapter runs\n"
    "    /etc/referral/NAME.conf\n"
    "                           the config of the systemd unit referral-adapter@NAME.service\n"
    "\n"
    "EXIT STATUS\n"
    "    0  done (run: stopped by SIGTERM or SIGINT)\n"
    "    1  status: the store's schema is not this version's (an older one migrates when the adapter\n"
    "       runs), or it is not an adapter's store\n"
    "    2  usage, config or start-up error (a bad option or setting, named with its file and line; an\n"
    "       unreadable or expired key, the data directory in use by another adapter, a store of a\n"
    "       newer schema): the unit does not restart on it (RestartPreventExitStatus=2)\n"
    "    3  run: a failure after start that may pass: the unit restarts on it\n"
    "\n"
    "EXAMPLES\n"
    "    referral-adapter --config /etc/referral/cpd-rms.conf\n"
    "    referral-adapter run --config /etc/referral/sao-intake.conf --log-format json\n"
    "    referral-adapter status --config /etc/referral/cpd-rms.conf\n"
    "    referral-adapter status --config /etc/referral/cpd-rms.conf \\\n"
    "        --id 01a211c51ccb7f8784e61fa7e221140d\n"
    "\n"
    "SEE ALSO\n"
    "    referral-broker(1), referral-admin(1), referral-keys(1)\n";

int main(int argc, char **argv)
{
    tool_init(argv[0]);
    const char *command = "run";
    if (argc > 1 && argv[1][0] != '-') {
        command = argv[1];
        argv++;
        argc--;
    }
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"id", required_argument, NULL, 'i'},
        {"log-format", required_argument, NULL, 'f'},
        {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *id = NULL, *log_format = NULL, *log_level = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            xoption_once(&config, optarg, "--config");
            break;
        case 'i':
            xoption_once(&id, optarg, "--id");
            break;
        case 'f':
            xoption_once(&log_format, optarg, "--log-format");
            break;
        case 'l':
            xoption_once(&log_level, optarg, "--log-level");
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            xdie(EXIT_USAGE, "bad option (see --help)");
        }
    }
    if (optind < argc)
        xdie(EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    xrequire(config, "--config");
    char err[1024];
    if (strcmp(command, "status") == 0) {
        if (log_format != NULL || log_level != NULL)
            xdie(EXIT_USAGE, "--log-format and --log-level are for run");
        rb_err rc = adapter_status(config, id, err, sizeof err);
        if (rc != RB_OK)
            xdie(tool_exit_code(rc), "%s", err);
        return 0;
    }
    if (strcmp(command, "run") != 0)
        xdie(EXIT_USAGE, "unknown command '%s' (see --help)", command);
    if (id != NULL)
        xdie(EXIT_USAGE, "--id is for status");
    xlog_options(log_format, log_level);
    /* Before the store is opened: a SIGTERM while it migrates or checks must stop the adapter cleanly (it
     * returns from adapter_run at once), not kill it half-way. */
    const volatile sig_atomic_t *stopping = xdaemon_signals();
    adapter_t *a;
    rb_err rc = adapter_open(&a, config, err, sizeof err);
    if (rc != RB_OK) /* busy (its data directory, or the intake's database, held for now): may pass */
        xdie(rc == RB_ERR_BUSY ? EXIT_RETRY : EXIT_USAGE, "%s", err);
    rc = adapter_run(a, stopping);
    adapter_close(&a);
    return rc == RB_OK ? 0 : EXIT_RETRY;
}
