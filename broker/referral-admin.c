/* referral-admin -- signed administration of a running broker.
 *
 *   referral-admin --broker ENDPOINT --broker-card CARD --as ADMIN_SECRET [--passphrase-file F] COMMAND ...
 *
 * Commands: adapter add --card CARD | adapter list | adapter disable NAME | adapter enable NAME |
 *           key revoke KEYID --reason TEXT | status
 * Each command is signed with the admin's key; the broker verifies it and records it. The output is JSON.
 * Exit status: 0 done, 1 refused by the broker, 2 usage or system error. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "tool.h"

static const char usage[] =
    "usage: referral-admin --broker ENDPOINT --broker-card CARD --as ADMIN_SECRET [--passphrase-file F]\n"
    "                      COMMAND [ARGS]\n"
    "\n"
    "  adapter add --card CARD      registers an adapter (role source or sink, from its card) or an admin\n"
    "  adapter list                 every registered party\n"
    "  adapter disable NAME         refuses its connections and frames from now on\n"
    "  adapter enable NAME\n"
    "  key revoke KEYID --reason R  refuses everything signed with the key, for good\n"
    "  status                       per adapter: connected, queued, in flight, awaiting ack, dead letters\n"
    "\n"
    "Exit status: 0 done, 1 refused by the broker, 2 usage or system error.\n";

enum { OPT_BROKER = 1, OPT_BROKER_CARD, OPT_AS, OPT_PASS_FILE, OPT_CARD, OPT_REASON, OPT_TIMEOUT };

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"broker", required_argument, NULL, OPT_BROKER},
        {"broker-card", required_argument, NULL, OPT_BROKER_CARD},
        {"as", required_argument, NULL, OPT_AS},
        {"passphrase-file", required_argument, NULL, OPT_PASS_FILE},
        {"card", required_argument, NULL, OPT_CARD},
        {"reason", required_argument, NULL, OPT_REASON},
        {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *endpoint = NULL, *broker_card = NULL, *as = NULL, *pass_file = NULL, *card_path = NULL,
               *reason = NULL, *timeout = NULL;
    tool_init(argv[0]);
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_BROKER:
            xoption_once(&endpoint, optarg, "--broker");
            break;
        case OPT_BROKER_CARD:
            xoption_once(&broker_card, optarg, "--broker-card");
            break;
        case OPT_AS:
            xoption_once(&as, optarg, "--as");
            break;
        case OPT_PASS_FILE:
            xoption_once(&pass_file, optarg, "--passphrase-file");
            break;
        case OPT_CARD:
            xoption_once(&card_path, optarg, "--card");
            break;
        case OPT_REASON:
            xoption_once(&reason, optarg, "--reason");
            break;
        case OPT_TIMEOUT:
            xoption_once(&timeout, optarg, "--timeout-ms");
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            xdie(EXIT_USAGE, "bad option (see --help)");
        }
    }
    xrequire(endpoint, "--broker");
    xrequire(broker_card, "--broker-card");
    xrequire(as, "--as");
    char **words = argv + optind;
    int n_words = argc - optind;
    if (n_words < 1)
        xdie(EXIT_USAGE, "a command is required (see --help)");

    /* The command line, as the broker's command name and arguments. */
    char command[64];
    const char *args[2];
    size_t n_args = 0;
    char card_text[CARD_TEXT_MAX + 1];
    if (n_words >= 2 && strcmp(words[0], "adapter") == 0) {
        snprintf(command, sizeof command, "adapter %s", words[1]);
        if (strcmp(words[1], "add") == 0) {
            xrequire(card_path, "--card");
            card_t card;
            rb_err rc = card_read_file(&card, card_path);
            if (rc != RB_OK)
                xfail(rc, card_path);
            card_text[card_to_text(&card, card_text)] = '\0';
            args[n_args++] = card_text;
        } else if (n_words == 3) {
            args[n_args++] = words[2];
        }
    } else if (n_words == 3 && strcmp(words[0], "key") == 0 && strcmp(words[1], "revoke") == 0) {
        xrequire(reason, "--reason");
        snprintf(command, sizeof command, "key revoke");
        args[n_args++] = words[2];
        args[n_args++] = reason;
    } else if (n_words == 1 && strcmp(words[0], "status") == 0) {
        snprintf(command, sizeof command, "status");
    } else {
        xdie(EXIT_USAGE, "unknown command (see --help)");
    }

    card_t broker;
    rb_err rc = card_read_file(&broker, broker_card);
    if (rc != RB_OK)
        xfail(rc, broker_card);
    identity_t *me = xload_identity(as, pass_file);
    int timeout_ms = timeout ? atoi(timeout) : 10000;
    char err[512];
    client_t *client;
    if ((rc = client_connect(&client, endpoint, me, &broker, 0, timeout_ms, err, sizeof err)) != RB_OK)
        xdie(EXIT_USAGE, "%s", err);
    bool ok;
    char *output;
    rc = client_admin(client, me, command, args, n_args, timeout_ms, &ok, &output);
    client_close(&client);
    identity_free(&me);
    if (rc != RB_OK)
        xfail(rc, "no answer from the broker");
    if (!ok)
        xdie(EXIT_VERIFY, "refused: %s", output);
    printf("%s\n", output);
    free(output);
    return 0;
}
