/* referral-admin -- signed administration of a running broker.
 *
 *   referral-admin --broker ENDPOINT --broker-card CARD --as ADMIN_SECRET [--passphrase-file F] COMMAND ...
 *
 * Commands: adapter add|list|disable|enable, key add|revoke, status, message show, dead-letters
 * list|requeue|discard, quarantine list|release|discard, export-ledger, backup (see usage below). Each command is
 * signed with the admin's key; the broker verifies it and records it in its ledger. Output is JSON, or for
 * status and lists a table unless --json. Nothing destructive happens without --yes.
 * Exit status: 0 done, 1 refused by the broker (or status found something that needs attention), 2 usage
 * or system error. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <inttypes.h>
#include <jansson.h>
#include <sqlite3.h>

#include "audit.h"
#include "backup_fetch.h"
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
    "        Every registered party: name, role, agency, keyId (its newest key), enabled, keyExpiresMs\n"
    "        (that key's expiry) and keysEndMs (when the last of its keys not revoked stops).\n"
    "    adapter disable NAME\n"
    "    adapter enable NAME\n"
    "        Refuses the party's connections and frames from now on, or admits them again.\n"
    "    key add --card NEW.card [--cert NEW.cert]\n"
    "        Registers a party's rotated key (made by referral-keys rotate), accepted only with its\n"
    "        certification by a valid key of the same party (default: NEW.cert next to the card). The old\n"
    "        key stays valid for the broker's [keys] rotation_overlap_ms, then retires by itself. The\n"
    "        adapters of the other role (sinks for a source's key, sources for a sink's) are sent a key\n"
    "        notice.\n"
    "    key revoke KEYID --reason compromised|superseded|retired [--since TIME]\n"
    "        Refuses the key (16 hex digits) from now on; anything new it signs is refused whatever its\n"
    "        date. compromised: what it signed from TIME (UTC, 2026-11-25T08:00:00Z; default now) is\n"
    "        refused too, and what of it is still queued is quarantined. The adapters of the other role\n"
    "        are sent a signed revocation notice. The last admin key cannot be revoked.\n"
    "    status [--json]\n"
    "        Per adapter and in total: connected, queued, inFlight, awaitingAck and its oldest age,\n"
    "        overdueAcks, deadLetters, quarantined, receiptsPerMinute, when its keys end (keysEndMs);\n"
    "        the broker's own key and when it expires; a table unless --json. Then,\n"
    "        on standard error, each thing that needs someone (dead letters, quarantined messages,\n"
    "        overdue ACKs, messages waiting for an adapter that is not connected, keys ending within\n"
    "        [keys] expiry_warn_ms), and exit 1 if any.\n"
    "    message show MESSAGE_ID\n"
    "        A message's metadata and its history from the ledger; never its content.\n"
    "    dead-letters list [--json]\n"
    "    dead-letters requeue MESSAGE_ID | --all --yes\n"
    "        Queues dead letters for delivery again, as new, with a new time to live.\n"
    "    dead-letters discard MESSAGE_ID --reason TEXT --yes\n"
    "        Gives a dead letter up for good: its envelope is deleted, the decision ledgered.\n"
    "    quarantine list [--json]\n"
    "    quarantine release MESSAGE_ID --yes | --all --yes\n"
    "    quarantine discard MESSAGE_ID --reason TEXT --yes\n"
    "        Messages held because their signing key was compromised: deliver them after all, or not.\n"
    "        A sink told of the compromise refuses what the key signed from --since on, so release\n"
    "        only what was signed before it (received by the broker after it).\n"
    "    export-ledger --out FILE\n"
    "        Reads the audit ledger up to its latest checkpoint, page by page (each page read is itself\n"
    "        ledgered), and writes it for referral-audit: JSON lines if FILE ends in .jsonl, else\n"
    "        SQLite. Holds no envelope content.\n"
    "    backup --out FILE\n"
    "        A consistent copy of the running broker's database, taken by the broker while traffic\n"
    "        flows, fetched in signed chunks and checked (SHA-256, SQLite integrity) before it is put\n"
    "        in place as FILE (mode 0600). Install it with referral-broker restore. It holds the\n"
    "        sealed envelopes still queued: keep it as safe as the broker's data directory.\n"
    "\n"
    "OPTIONS\n"
    "    --broker ENDPOINT      the broker's ZeroMQ endpoint, e.g. tcp://broker.example.org:7450\n"
    "    --broker-card CARD     the broker's card, to authenticate the broker\n"
    "    --as ADMIN_SECRET      the admin's secret key file (referral-keys generate --role admin)\n"
    "    --passphrase-file F    the secret's passphrase, from the first line of F (mode 0600);\n"
    "                           without it, asked on the terminal when the secret has one\n"
    "    --timeout-ms MS        how long to wait for the broker (default 10000)\n"
    "    --card CARD            adapter add: the card to register\n"
    "    --reason TEXT          key revoke: compromised, superseded or retired; discard: why\n"
    "    --since TIME           key revoke: when the compromise began (UTC, 2026-11-25T08:00:00Z)\n"
    "    --cert FILE            key add: the certification (default: the card's path with .cert)\n"
    "    --json                 status and lists: JSON instead of a table\n"
    "    --all                  requeue or release every message in the list (with --yes)\n"
    "    --yes                  confirms a change that cannot be undone\n"
    "    --out FILE             export-ledger, backup: where to write\n"
    "    --help                 this text\n"
    "\n"
    "FILES\n"
    "    The broker's card is DIR/broker.card in its data directory; admins keep a copy.\n"
    "\n"
    "EXIT STATUS\n"
    "    0  done\n"
    "    1  refused by the broker (bad signature, not an admin, unknown party, ...), or an answer or\n"
    "       ledger page that does not verify; for status, something needs attention (each reason\n"
    "       on standard error)\n"
    "    2  usage or system error (a bad option, no answer from the broker, an unreadable file)\n"
    "\n"
    "EXAMPLES\n"
    "    admin=\"referral-admin --broker tcp://127.0.0.1:7450 --broker-card broker.card --as ops.secret\"\n"
    "    $admin adapter add --card cpd-rms.card\n"
    "    $admin status\n"
    "    $admin status --json | jq '.adapters[] | select(.deadLetters > 0)'\n"
    "    $admin key add --card cpd-rms-2026.card\n"
    "    $admin key revoke 3f2a9c0d1e4b5a67 --reason compromised --since 2026-11-25T08:00:00Z\n"
    "    $admin dead-letters requeue --all --yes\n"
    "    $admin export-ledger --out ledger.jsonl\n"
    "    $admin backup --out /var/backups/referral/broker-$(date -u +%Y%m%d).db\n"
    "\n"
    "SEE ALSO\n"
    "    referral-broker(1), referral-keys(1), referral-audit(1)\n";

enum {
    OPT_BROKER = 1,
    OPT_BROKER_CARD,
    OPT_AS,
    OPT_PASS_FILE,
    OPT_CARD,
    OPT_REASON,
    OPT_TIMEOUT,
    OPT_OUT,
    OPT_CERT,
    OPT_SINCE,
    OPT_JSON,
    OPT_ALL,
    OPT_YES
};

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

static const char *read_card_text(const char *path, char text[CARD_TEXT_MAX + 1])
{
    card_t card;
    rb_err rc = card_read_file(&card, path);
    if (rc != RB_OK)
        xfail(rc, path);
    text[card_to_text(&card, text)] = '\0';
    return text;
}

/* The certification written by `referral-keys rotate` next to the card, unless named. */
static const char *read_cert_text(const char *card_path, const char *cert_path, char text[CARD_TEXT_MAX + 1])
{
    char path[4096];
    size_t n = strlen(card_path);
    if (cert_path == NULL) {
        if (n < 5 || strcmp(card_path + n - 5, ".card") != 0 ||
            snprintf(path, sizeof path, "%.*s.cert", (int)(n - 5), card_path) >= (int)sizeof path)
            xdie(EXIT_USAGE, "--cert is required when the card's file name does not end in .card");
        cert_path = path;
    }
    card_cert_t cert;
    rb_err rc = card_cert_read_file(&cert, cert_path);
    if (rc != RB_OK)
        xdie(tool_exit_code(rc), "%s: %s (key add needs the certification `referral-keys rotate` wrote)",
             cert_path, rc == RB_ERR_IO ? "cannot read it" : rb_strerror(rc));
    text[card_cert_to_text(&cert, text)] = '\0';
    return text;
}

/* The number in exactly `width` digits at *p, which must be followed by `then`; -1 otherwise. Moves *p
 * past both. */
static int digits(const char **p, int width, char then)
{
    int v = 0;
    for (int i = 0; i < width; i++, (*p)++) {
        if (**p < '0' || **p > '9')
            return -1;
        v = v * 10 + (**p - '0');
    }
    if (**p != then)
        return -1;
    if (then != '\0')
        (*p)++;
    return v;
}

/* "2026-11-25T08:00:00Z" as Unix milliseconds. */
static int64_t parse_time(const char *text)
{
    struct tm tm = {0};
    const char *p = text;
    tm.tm_year = digits(&p, 4, '-');
    tm.tm_mon = tm.tm_year < 0 ? -1 : digits(&p, 2, '-');
    tm.tm_mday = tm.tm_mon < 0 ? -1 : digits(&p, 2, 'T');
    tm.tm_hour = tm.tm_mday < 0 ? -1 : digits(&p, 2, ':');
    tm.tm_min = tm.tm_hour < 0 ? -1 : digits(&p, 2, ':');
    tm.tm_sec = tm.tm_min < 0 ? -1 : digits(&p, 2, 'Z');
    if (tm.tm_sec < 0 || *p != '\0' || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
        tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        xdie(EXIT_USAGE, "--since must be a UTC time like 2026-11-25T08:00:00Z");
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000;
}

static void print_age(int64_t ms)
{
    if (ms <= 0)
        printf("%8s", "-");
    else if (ms < 3600000)
        printf("%7lldm", (long long)(ms / 60000));
    else if (ms < 172800000)
        printf("%7lldh", (long long)(ms / 3600000));
    else
        printf("%7lldd", (long long)(ms / 86400000));
}

static long long int_of(json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

/* status: each reason it needs attention on stderr; EXIT_VERIFY (1) when there is any, else 0. */
static int print_attention(const char *output)
{
    json_t *o = json_loads(output, 0, NULL), *v;
    size_t i, n = 0;
    fflush(stdout); /* the table first, then why, when both go to one file (status >log 2>&1, cron mail) */
    json_array_foreach(json_object_get(o, "attention"), i, v)
    {
        fprintf(stderr, "referral-admin: attention: %s\n", json_string_value(v));
        n++;
    }
    json_decref(o);
    return n > 0 ? EXIT_VERIFY : 0;
}

/* status and the lists, for people: one line per adapter or message. */
static void print_table(const char *command, const char *output)
{
    json_error_t jerr;
    json_t *o = json_loads(output, 0, &jerr), *v;
    size_t i;
    if (o == NULL)
        xdie(EXIT_USAGE, "the broker's answer is not what this tool expects");
    if (strcmp(command, "status") == 0) {
        printf("%-24s %-6s %-5s %7s %8s %8s %8s %8s %8s %8s %8s %8s\n", "ADAPTER", "ROLE", "CONN", "QUEUED",
               "INFLIGHT", "AWAITACK", "OLDEST", "OVERDUE", "DEAD", "QUARANT", "RCPT/MIN", "KEY LEFT");
        long long at = int_of(o, "atMs");
        json_t *total = json_object_get(o, "total");
        json_array_foreach(json_object_get(o, "adapters"), i, v)
        {
            printf("%-24s %-6s %-5s %7lld %8lld %8lld ", json_string_value(json_object_get(v, "name")),
                   json_string_value(json_object_get(v, "role")),
                   json_is_true(json_object_get(v, "connected")) ? "yes" : "no", int_of(v, "queued"),
                   int_of(v, "inFlight"), int_of(v, "awaitingAck"));
            print_age(int_of(v, "oldestAwaitingAckMs"));
            printf(" %8lld %8lld %8lld %8lld ", int_of(v, "overdueAcks"), int_of(v, "deadLetters"),
                   int_of(v, "quarantined"), int_of(v, "receiptsPerMinute"));
            print_age(int_of(v, "keysEndMs") > at ? int_of(v, "keysEndMs") - at : 0);
            printf("\n");
        }
        printf("%-24s %-6s %-5lld %7lld %8lld %8lld ", "TOTAL", "", int_of(total, "connected"),
               int_of(total, "queued"), int_of(total, "inFlight"), int_of(total, "awaitingAck"));
        print_age(int_of(total, "oldestAwaitingAckMs"));
        printf(" %8lld %8lld %8lld %8lld ", int_of(total, "overdueAcks"), int_of(total, "deadLetters"),
               int_of(total, "quarantined"), int_of(total, "receiptsPerMinute"));
        print_age(int_of(total, "keysEndMs") > at ? int_of(total, "keysEndMs") - at : 0);
        json_t *me = json_object_get(o, "broker");
        printf("\nbroker %s: key %s expires in %lld days\nledger: %lld leaves\n",
               json_string_value(json_object_get(me, "name")),
               json_string_value(json_object_get(me, "keyId")), (int_of(me, "keyExpiresMs") - at) / 86400000,
               int_of(o, "ledgerSize"));
    } else {
        printf("%-32s %-20s %-20s %4s %-20s %s\n", "MESSAGE", "SENDER", "RECIPIENT", "TRY", "RECEIVED",
               "REASON");
        json_array_foreach(o, i, v)
        {
            char when[32];
            time_t t = (time_t)(int_of(v, "receivedMs") / 1000);
            struct tm tm;
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
            printf("%-32s %-20s %-20s %4lld %-20s %s\n", json_string_value(json_object_get(v, "id")),
                   json_string_value(json_object_get(v, "sender")),
                   json_string_value(json_object_get(v, "recipient")), int_of(v, "attempts"), when,
                   json_string_value(json_object_get(v, "reason")));
        }
        printf("%zu message%s\n", json_array_size(o), json_array_size(o) == 1 ? "" : "s");
    }
    json_decref(o);
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
        {"cert", required_argument, NULL, OPT_CERT},
        {"since", required_argument, NULL, OPT_SINCE},
        {"json", no_argument, NULL, OPT_JSON},
        {"all", no_argument, NULL, OPT_ALL},
        {"yes", no_argument, NULL, OPT_YES},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *endpoint = NULL, *broker_card = NULL, *as = NULL, *pass_file = NULL, *card_path = NULL,
               *reason = NULL, *timeout = NULL, *out = NULL, *cert_path = NULL, *since = NULL, *json = NULL,
               *all = NULL, *yes = NULL;
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
        case OPT_CERT:
            xoption_once(&cert_path, optarg, "--cert");
            break;
        case OPT_SINCE:
            xoption_once(&since, optarg, "--since");
            break;
        case OPT_JSON:
            xoption_once(&json, "yes", "--json");
            break;
        case OPT_ALL:
            xoption_once(&all, "yes", "--all");
            break;
        case OPT_YES:
            xoption_once(&yes, "yes", "--yes");
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
    const char *args[3];
    size_t n_args = 0;
    char card_text[CARD_TEXT_MAX + 1], cert_text[CARD_TEXT_MAX + 1], since_ms[24];
    const char *w0 = words[0], *w1 = n_words > 1 ? words[1] : "", *w2 = n_words > 2 ? words[2] : NULL;
    bool table = false; /* a list or status printed for people unless --json */
    if (n_words >= 2)
        snprintf(command, sizeof command, "%s %s", w0, w1);
    if (n_words >= 2 && strcmp(w0, "adapter") == 0) {
        if (strcmp(w1, "add") == 0) {
            xrequire(card_path, "--card");
            args[n_args++] = read_card_text(card_path, card_text);
        } else if (n_words == 3) {
            args[n_args++] = w2;
        }
    } else if (n_words == 2 && strcmp(w0, "key") == 0 && strcmp(w1, "add") == 0) {
        xrequire(card_path, "--card");
        args[n_args++] = read_card_text(card_path, card_text);
        args[n_args++] = read_cert_text(card_path, cert_path, cert_text);
    } else if (n_words == 3 && strcmp(w0, "key") == 0 && strcmp(w1, "revoke") == 0) {
        xrequire(reason, "--reason");
        args[n_args++] = w2;
        args[n_args++] = reason;
        snprintf(since_ms, sizeof since_ms, "%lld", since ? (long long)parse_time(since) : 0LL);
        args[n_args++] = since_ms;
    } else if (n_words == 1 && strcmp(w0, "status") == 0) {
        snprintf(command, sizeof command, "status");
        table = json == NULL;
    } else if (n_words == 3 && strcmp(w0, "message") == 0 && strcmp(w1, "show") == 0) {
        args[n_args++] = w2;
    } else if (n_words >= 2 && (strcmp(w0, "dead-letters") == 0 || strcmp(w0, "quarantine") == 0)) {
        bool discard = strcmp(w1, "discard") == 0;
        if (strcmp(w1, "list") == 0 && n_words == 2) {
            table = json == NULL;
        } else if ((strcmp(w1, "requeue") == 0 || strcmp(w1, "release") == 0) && all != NULL &&
                   n_words == 2) {
            if (yes == NULL)
                xdie(EXIT_USAGE, "%s %s --all changes every message in the list: add --yes", w0, w1);
            args[n_args++] = "all";
        } else if (n_words == 3 && (strcmp(w1, "requeue") == 0 || strcmp(w1, "release") == 0 || discard)) {
            if (discard)
                xrequire(reason, "--reason");
            if (yes == NULL && (discard || strcmp(w1, "release") == 0))
                xdie(EXIT_USAGE, "%s %s cannot be undone: add --yes", w0, w1);
            args[n_args++] = w2;
            if (discard)
                args[n_args++] = reason;
        } else {
            xdie(EXIT_USAGE, "unknown %s command (see --help)", w0);
        }
    } else if (n_words == 1 && strcmp(w0, "export-ledger") == 0) {
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
    int timeout_ms = 10000;
    if (timeout != NULL) {
        char *end;
        long v = strtol(timeout, &end, 10);
        if (end == timeout || *end != '\0' || v < 1 || v > 3600000)
            xdie(EXIT_USAGE, "--timeout-ms must be a number of milliseconds from 1 to 3600000");
        timeout_ms = (int)v;
    }
    char err[512];
    client_t *client;
    if (client_connect(&client, endpoint, me, &broker, 0, NULL, timeout_ms, err, sizeof err) != RB_OK)
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
    if (table)
        print_table(command, output);
    else
        printf("%s\n", output);
    int status = strcmp(command, "status") == 0 ? print_attention(output) : 0;
    free(output);
    return status;
}
