/* referral-admin -- signed administration of a running broker.
 *
 *   referral-admin --broker ENDPOINT --broker-card CARD --as ADMIN_SECRET [--passphrase-file F] COMMAND ...
 *
 * Commands: adapter add --card CARD | adapter list | adapter disable NAME | adapter enable NAME |
 *           key revoke KEYID --reason TEXT | status | dead-letters requeue ID | export-ledger --out FILE |
 *           backup --out FILE
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
#include "backup.h"
#include "client.h"
#include "keyfile.h"
#include "pbjson.h"
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
    "  dead-letters requeue ID      queues a dead letter again, as new\n"
    "  export-ledger --out FILE     the audit ledger up to its latest checkpoint, for referral-audit: JSON\n"
    "                               lines if FILE ends in .jsonl, else SQLite (each page read is ledgered)\n"
    "  backup --out FILE            a consistent copy of the running broker's database (0600), checked\n"
    "                               (SHA-256, integrity); install it with referral-broker restore\n"
    "\n"
    "Exit status: 0 done, 1 refused by the broker, 2 usage or system error.\n";

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
    } else if (n_words == 1 && strcmp(words[0], "backup") == 0) {
        xrequire(out, "--out");
        snprintf(command, sizeof command, "backup start");
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
    if (strcmp(command, "backup start") == 0) {
        backup_fetched_t got;
        rc = backup_fetch(client, me, out, timeout_ms, &got, err, sizeof err);
        client_close(&client);
        identity_free(&me);
        if (rc != RB_OK)
            xdie(tool_exit_code(rc), "backup: %s", err);
        printf("{\"backup\": \"%s\", \"file\": \"%s\", \"bytes\": %" PRIu64 ", \"sha256\": \"%s\", "
               "\"integrity\": \"ok\", \"ledgerLeaves\": %" PRId64 ", \"messages\": %" PRId64
               ", \"ms\": %" PRId64 "}\n",
               got.id, out, got.bytes, got.sha256, got.ledger_leaves, got.messages, got.ms);
        return 0;
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
