/* referral-adapter -- runs one adapter (a connector between an agency's system and the broker).
 *
 *   referral-adapter --config FILE              run in the foreground until SIGTERM or SIGINT
 *   referral-adapter status --config FILE [--id MESSAGE_ID]
 *
 * docs/ADAPTERS.md describes the config file and each connector.
 * Exit status: 0 ok, 1 refused, 2 usage or system error. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "tool.h"

static const char usage[] =
    "usage: referral-adapter [run] --config FILE\n"
    "       referral-adapter status --config FILE [--id MESSAGE_ID]\n"
    "\n"
    "  run      runs the adapter in the foreground until SIGTERM or SIGINT; key=value logs on stderr\n"
    "  status   counts by state (queued, awaiting ack, accepted, rejected, overdue, inbox, filed), or the\n"
    "           history of one message\n"
    "\n"
    "Exit status: 0 ok, 1 refused, 2 usage or system error.\n";

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

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
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *id = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            xoption_once(&config, optarg, "--config");
            break;
        case 'i':
            xoption_once(&id, optarg, "--id");
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
        rb_err rc = adapter_status(config, id, err, sizeof err);
        if (rc != RB_OK)
            xdie(tool_exit_code(rc), "%s", err);
        return 0;
    }
    if (strcmp(command, "run") != 0)
        xdie(EXIT_USAGE, "unknown command '%s' (see --help)", command);
    if (id != NULL)
        xdie(EXIT_USAGE, "--id is for status");
    adapter_t *a;
    rb_err rc = adapter_open(&a, config, err, sizeof err);
    if (rc != RB_OK)
        xdie(EXIT_USAGE, "%s", err);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    rc = adapter_run(a, &stopping);
    adapter_close(&a);
    return rc == RB_OK ? 0 : EXIT_USAGE;
}
