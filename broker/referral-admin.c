/* referral-admin -- signed administration of a running broker.
 *
 *   referral-admin --broker ENDPOINT --broker-card CARD --as ADMIN_SECRET [--passphrase-file F] COMMAND ...
 *
 * Commands: adapter add --card CARD | adapter list | adapter disable NAME | adapter enable NAME |
 *           key revoke KEYID --reason TEXT | status | dead-letters requeue ID | export-ledger --out FILE
 * Each command is signed with the admin's key; the broker verifies it and records it. The output is JSON.
 * Exit status: 0 done, 1 refused by the broker, 2 usage or system error. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <inttypes.h>
#include <jansson.h>
#include <sqlite3.h>

#include "audit.h"
#include "client.h"
#include "keyfile.h"
#include "pbjson.h"
#include "tool.h"

/* --help, laid out as a manual page, which make install turns into referral-admin(1) with
 * broker/dist/help-to-man.sh. A new command is one more block under COMMANDS, with its options under
 * OPTIONS and an example under EXAMPLES. */
static const char usage[] =
    "NAME\n"
    "    referral-admin - administer a running broker with signed commands\n"
    "\n"
    "SYNOPSIS\n"
    "    referral-admin --broker ENDPOINT --broker-card CARD --as ADMIN_SECRET [--passphrase-file F]\n"
    "                   [--timeout-ms MS] COMMAND [ARGUMENTS]\n"
    "    referral-admin --help\n"
    "\n"
    "DESCRIPTION\n"
    "    Connects to the broker over CURVE as a registered admin, sends one command signed with the\n"
    "    admin's key, and prints the broker's answer (JSON) on standard output. The broker checks the\n"
    "    signature, runs the command and records it, signature included, in its audit ledger, so every\n"
    "    change and every read of the ledger can be traced to the admin who made it.\n"
    "\n"
    "COMMANDS\n"
    "    adapter add --card CARD\n"
    "        Registers the holder of CARD: an adapter (role source or sink, from the card) or another\n"
    "        admin. Prints {\"added\": NAME, \"role\": ROLE}.\n"
    "    adapter list\n"
    "        Every registered party: name, role, agency, keyId, enabled.\n"
    "    adapter disable NAME\n"
    "    adapter enable NAME\n"
    "        Refuses the party's connections and frames from now on, or admits them again.\n"
    "    key revoke KEYID --reason TEXT\n"
    "        Refuses everything signed with the key (16 hex digits), from now on and for good.\n"
    "    status\n"
    "        Per party, as adapter list, and for adapters: connected, queued, inFlight, awaitingAck,\n"
    "        oldestAwaitingAckMs, deadLetters.\n"
    "    dead-letters requeue MESSAGE_ID\n"
    "        Queues a dead letter (32 hex digits) for delivery again, as new.\n"
    "    export-ledger --out FILE\n"
    "        Reads the audit ledger up to its latest checkpoint, page by page (each page read is itself\n"
    "        ledgered), and writes it for referral-audit: JSON lines if FILE ends in .jsonl, else\n"
    "        SQLite. Holds no envelope content.\n"
    "\n"
    "OPTIONS\n"
    "    --broker ENDPOINT      the broker's ZeroMQ endpoint, e.g. tcp://broker.example.org:7450\n"
    "    --broker-card CARD     the broker's card, to authenticate the broker\n"
    "    --as ADMIN_SECRET      the admin's secret key file (referral-keys generate --role admin)\n"
    "    --passphrase-file F    the secret's passphrase, from the first line of F (mode 0600);\n"
    "                           without it, asked on the terminal when the secret has one\n"
    "    --timeout-ms MS        how long to wait for the broker (default 10000)\n"
    "    --card CARD            adapter add: the card to register\n"
    "    --reason TEXT          key revoke: why (recorded in the ledger)\n"
    "    --out FILE             export-ledger: where to write\n"
    "    --help                 this text\n"
    "\n"
    "FILES\n"
    "    The broker's card is DIR/broker.card in its data directory; admins keep a copy.\n"
    "\n"
    "EXIT STATUS\n"
    "    0  done\n"
    "    1  refused by the broker (bad signature, not an admin, unknown party, ...), or an answer or\n"
    "       ledger page that does not verify\n"
    "    2  usage or system error (a bad option, no answer from the broker, an unreadable file)\n"
    "\n"
    "EXAMPLES\n"
    "    admin=\"referral-admin --broker tcp://127.0.0.1:7450 --broker-card broker.card --as ops.secret\"\n"
    "    $admin adapter add --card cpd-rms.card\n"
    "    $admin status | jq '.[] | select(.deadLetters > 0)'\n"
    "    $admin key revoke 3f2a9c0d1e4b5a67 --reason compromised\n"
    "    $admin export-ledger --out ledger.jsonl\n"
    "\n"
    "SEE ALSO\n"
    "    referral-broker(1), referral-keys(1), referral-audit(1)\n";

enum { OPT_BROKER = 1, OPT_BROKER_CARD, OPT_AS, OPT_PASS_FILE, OPT_CARD, OPT_REASON, OPT_TIMEOUT, OPT_OUT };

#define PAGE_LEAVES "1000"

/* Appends one page of "ledger read" output to the export being built; *from and *until advance. */
static void take_page(ledger_t *l, const char *output, uint64_t *from, uint64_t *until)
{
    json_error_t jerr;
    json_t *o = json_loads(output, 0, &jerr), *v;
    size_t i;
    if (o == NULL || !json_is_integer(json_object_get(o, "until")))
        xdie(EXIT_USAGE, "the broker's ledger page is not what this tool expects");
    *until = (uint64_t)json_integer_value(json_object_get(o, "until"));
    json_array_foreach(json_object_get(o, "checkpoints"), i, v)
    {
        checkpoint_t cp;
        const char *note = json_string_value(v);
        if (note == NULL || checkpoint_parse(note, strlen(note), &cp) != RB_OK ||
            ledger_add_checkpoint(l, note, cp.size, 0) != RB_OK)
            xdie(EXIT_VERIFY, "the broker sent a checkpoint that does not parse");
    }
    json_array_foreach(json_object_get(o, "leaves"), i, v)
    {
        const char *b64 = json_string_value(v);
        uint8_t *leaf = malloc(LEDGER_LEAF_MAX);
        size_t len;
        rb_err rc = b64 == NULL || leaf == NULL
                        ? RB_ERR_MALFORMED
                        : keyfile_unbase64(b64, strlen(b64), leaf, LEDGER_LEAF_MAX, &len);
        if (rc == RB_OK)
            rc = ledger_append_leaf(l, leaf, len);
        free(leaf);
        if (rc != RB_OK)
            xdie(EXIT_VERIFY, "leaf %" PRIu64 " from the broker: %s", ledger_size(l), rb_strerror(rc));
    }
    *from = ledger_size(l);
    json_decref(o);
}

/* Reads the ledger page by page (each read is a signed, ledgered admin command) and writes an export. */
static int export_ledger(client_t *client, const identity_t *me, const card_t *broker, const char *out,
                         int timeout_ms)
{
    sqlite3 *db;
    ledger_t *l;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK ||
        sqlite3_exec(db, LEDGER_SCHEMA, NULL, NULL, NULL) != SQLITE_OK || ledger_open(&l, db) != RB_OK)
        xdie(EXIT_USAGE, "cannot make an in-memory ledger");
    uint64_t from = 0, until = 0;
    do {
        char from_text[24], until_text[24];
        snprintf(from_text, sizeof from_text, "%" PRIu64, from);
        snprintf(until_text, sizeof until_text, "%" PRIu64, until);
        const char *args[] = {from_text, PAGE_LEAVES, until_text};
        bool ok;
        char *output;
        rb_err rc = client_admin(client, me, "ledger read", args, 3, timeout_ms, &ok, &output);
        if (rc != RB_OK)
            xfail(rc, "no answer from the broker");
        if (!ok)
            xdie(EXIT_VERIFY, "refused: %s", output);
        take_page(l, output, &from, &until);
        free(output);
    } while (from < until);
    char card_text[CARD_TEXT_MAX + 1], err[600];
    card_text[card_to_text(broker, card_text)] = '\0';
    size_t n = strlen(out);
    bool jsonl = n > 6 && strcmp(out + n - 6, ".jsonl") == 0;
    if (audit_write(l, until, card_text, jsonl ? AUDIT_JSONL : AUDIT_SQLITE, out, err, sizeof err) != RB_OK)
        xdie(EXIT_USAGE, "%s", err);
    printf("{\"exported\": %" PRIu64 ", \"to\": \"%s\"}\n", until, out);
    ledger_close(&l);
    sqlite3_close(db);
    return 0;
}

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
        {"out", required_argument, NULL, OPT_OUT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *endpoint = NULL, *broker_card = NULL, *as = NULL, *pass_file = NULL, *card_path = NULL,
               *reason = NULL, *timeout = NULL, *out = NULL;
    tool_init(argv[0]);
    pbjson_init();
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
        case OPT_OUT:
            xoption_once(&out, optarg, "--out");
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
    } else if (n_words == 3 && strcmp(words[0], "dead-letters") == 0 && strcmp(words[1], "requeue") == 0) {
        snprintf(command, sizeof command, "dead-letters requeue");
        args[n_args++] = words[2];
    } else if (n_words == 1 && strcmp(words[0], "export-ledger") == 0) {
        xrequire(out, "--out");
        snprintf(command, sizeof command, "ledger read");
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
    if ((rc = client_connect(&client, endpoint, me, &broker, 0, NULL, timeout_ms, err, sizeof err)) != RB_OK)
        xdie(EXIT_USAGE, "%s", err);
    if (strcmp(command, "ledger read") == 0) {
        int status = export_ledger(client, me, &broker, out, timeout_ms);
        client_close(&client);
        identity_free(&me);
        return status;
    }
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
