/* referral-audit -- the auditor's tool: verifies, replays and proves from a ledger export, offline.
 *
 *   referral-audit export --data DIR --out FILE|DIR [--format sqlite|jsonl|tiles]   (on the broker host)
 *   referral-audit verify --ledger FILE [--broker-card CARD] [--no-signatures]
 *   referral-audit replay --ledger FILE [--data DIR]
 *   referral-audit history --ledger FILE MESSAGE_ID
 *   referral-audit prove --ledger FILE MESSAGE_ID --out DIR [--checkpoint FILE]
 *   referral-audit check-proof --proof FILE --broker-card CARD
 *   referral-audit consistency --ledger FILE --old CHECKPOINT --new CHECKPOINT
 *   referral-audit verifier-key --broker-card CARD
 *
 * Exit status: 0 verified, 1 a problem found (the first one is printed), 2 usage or system error. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "broker.h"
#include "keyfile.h"
#include "store.h"
#include "tiles.h"
#include "tool.h"
#include "wire.h"
#include "witness.h"

/* --help, laid out as a manual page, which make install turns into referral-audit(1) with
 * broker/dist/help-to-man.sh. A new command is one more block under COMMANDS, with its options under
 * OPTIONS and an example under EXAMPLES. */
static const char usage[] =
    "NAME\n"
    "    referral-audit - verify, replay and prove from an export of the broker's audit ledger, offline\n"
    "\n"
    "SYNOPSIS\n"
    "    referral-audit export --data DIR --out PATH [--format sqlite|jsonl|tiles]\n"
    "    referral-audit verify --ledger FILE [--broker-card CARD] [--no-signatures]\n"
    "    referral-audit replay --ledger FILE [--data DIR]\n"
    "    referral-audit history --ledger FILE MESSAGE_ID\n"
    "    referral-audit prove --ledger FILE MESSAGE_ID --out DIR [--checkpoint FILE]\n"
    "    referral-audit check-proof --proof FILE --broker-card CARD\n"
    "    referral-audit consistency --ledger FILE --old CHECKPOINT --new CHECKPOINT\n"
    "    referral-audit verifier-key --broker-card CARD\n"
    "    referral-audit --help\n"
    "\n"
    "DESCRIPTION\n"
    "    The broker records every event (registrations, key changes, submissions with the sender's\n"
    "    signature, deliveries, confirmations, ACKs, dead letters, admin commands) as a leaf of an RFC\n"
    "    6962 Merkle tree and signs checkpoints of it, which the adapters keep. An export holds the\n"
    "    leaves and checkpoints, never envelope content, so an auditor can check everything without\n"
    "    being able to read a referral.\n"
    "\n"
    "COMMANDS\n"
    "    export\n"
    "        On the broker host, with the broker stopped: records the export in the ledger, signs a\n"
    "        checkpoint of it, and writes the export (tiles: a C2SP tlog-tiles directory). A running\n"
    "        broker is exported with referral-admin export-ledger.\n"
    "    verify\n"
    "        Recomputes every leaf hash and the tree, checks every checkpoint's root and signature and\n"
    "        every sender, acker and admin signature; prints the first problem.\n"
    "    replay\n"
    "        Rebuilds each message's final state, flags impossible sequences, prints totals and time to\n"
    "        ACK; with the broker's data directory (broker stopped), lists every difference from its\n"
    "        tables.\n"
    "    history\n"
    "        The message's events with their leaf indexes and times.\n"
    "    prove\n"
    "        Writes DIR/INDEX.tlog-proof for each of the message's events: a C2SP tlog-proof of the leaf\n"
    "        under the checkpoint given, or the latest one.\n"
    "    check-proof\n"
    "        Verifies one proof without the ledger.\n"
    "    consistency\n"
    "        Proves that the log only grew between two checkpoints (e.g. two an adapter kept).\n"
    "    verifier-key\n"
    "        Prints the broker's checkpoint key in signed-note form, for transparency-log tools.\n"
    "\n"
    "OPTIONS\n"
    "    --data DIR             the broker's data directory (export; replay, to compare)\n"
    "    --out PATH             export: the file or, for tiles, directory; prove: the proofs' directory\n"
    "    --format FORMAT        export: sqlite (default), jsonl or tiles\n"
    "    --ledger FILE          an export (SQLite or JSON lines)\n"
    "    --broker-card CARD     the broker's card: the export must name it, proofs are checked with it\n"
    "    --no-signatures        verify: skip the signature checks (the tree is still checked)\n"
    "    --checkpoint FILE      prove: the checkpoint to prove against (e.g. one an adapter kept)\n"
    "    --proof FILE           check-proof: a .tlog-proof file\n"
    "    --old, --new CHECKPOINT\n"
    "                           consistency: two checkpoint notes, the older first\n"
    "    --help                 this text\n"
    "\n"
    "FILES\n"
    "    DIR/broker.db          the broker's database (export reads and records in it; replay compares)\n"
    "    FILE.jsonl, FILE       an export: JSON lines, or SQLite (referral-admin export-ledger writes\n"
    "                           either, by the name's ending)\n"
    "    DIR/INDEX.tlog-proof   a C2SP tlog-proof: the checkpoint, the leaf and its inclusion proof\n"
    "\n"
    "EXIT STATUS\n"
    "    0  verified (or done)\n"
    "    1  a problem found (the first one is printed)\n"
    "    2  usage or system error\n"
    "\n"
    "EXAMPLES\n"
    "    referral-admin ... export-ledger --out ledger.jsonl\n"
    "    referral-audit verify --ledger ledger.jsonl --broker-card broker.card\n"
    "    referral-audit history --ledger ledger.jsonl 01a211c51ccb7f8784e61fa7e221140d\n"
    "    referral-audit prove --ledger ledger.jsonl 01a211c51ccb7f8784e61fa7e221140d --out proofs\n"
    "    referral-audit check-proof --proof proofs/17.tlog-proof --broker-card broker.card\n"
    "\n"
    "SEE ALSO\n"
    "    referral-admin(1), referral-broker(1)\n";

enum {
    OPT_DATA = 1,
    OPT_OUT,
    OPT_FORMAT,
    OPT_LEDGER,
    OPT_CARD,
    OPT_NOSIG,
    OPT_CHECKPOINT,
    OPT_PROOF,
    OPT_OLD,
    OPT_NEW
};

typedef struct {
    const char *data, *out, *format, *ledger, *card, *checkpoint, *proof, *old, *new_;
    bool no_signatures;
    const char *arg; /* the one positional argument, a message id */
} options_t;

static void parse_options(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {
        {"data", required_argument, NULL, OPT_DATA},
        {"out", required_argument, NULL, OPT_OUT},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"ledger", required_argument, NULL, OPT_LEDGER},
        {"broker-card", required_argument, NULL, OPT_CARD},
        {"no-signatures", no_argument, NULL, OPT_NOSIG},
        {"checkpoint", required_argument, NULL, OPT_CHECKPOINT},
        {"proof", required_argument, NULL, OPT_PROOF},
        {"old", required_argument, NULL, OPT_OLD},
        {"new", required_argument, NULL, OPT_NEW},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char **slots[] = {NULL, &o->data,       &o->out,   &o->format, &o->ledger, &o->card,
                            NULL, &o->checkpoint, &o->proof, &o->old,    &o->new_};
    const char *names[] = {NULL, "--data",       "--out",   "--format", "--ledger", "--broker-card",
                           NULL, "--checkpoint", "--proof", "--old",    "--new"};
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c == 'h')
            fputs(usage, stdout), exit(0);
        else if (c == OPT_NOSIG)
            o->no_signatures = true;
        else if (c > 0 && c <= OPT_NEW && slots[c] != NULL)
            xoption_once(slots[c], optarg, names[c]);
        else
            xdie(EXIT_USAGE, "bad option (see --help)");
    }
    if (optind < argc)
        o->arg = argv[optind++];
    if (optind < argc)
        xdie(EXIT_USAGE, "unexpected argument: %s", argv[optind]);
}

#define TEXT_MAX (1 << 18) /* a checkpoint or a proof file, with its leaf */

static char *read_text(const char *path)
{
    size_t len;
    char *text = malloc(TEXT_MAX + 1);
    if (text == NULL)
        xfail(RB_ERR_NOMEM, path);
    struct stat st;
    rb_err rc = keyfile_read(path, text, TEXT_MAX, &len, &st);
    if (rc != RB_OK)
        xfail(rc, path);
    text[len] = '\0';
    return text;
}

static void open_export(audit_export_t *x, const char *path)
{
    char err[512];
    xrequire(path, "--ledger");
    if (audit_open(x, path, err, sizeof err) != RB_OK)
        xdie(EXIT_VERIFY, "%s", err);
}

static void message_id(const char *hex, uint8_t id[16])
{
    if (hex == NULL || strlen(hex) != 32 || !keyfile_unhex(hex, id, 16))
        xdie(EXIT_USAGE, "a message id (32 hex digits) is required");
}

static void iso_time(int64_t ms, char out[32])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

/* --- export (broker host) ------------------------------------------------------------------------------ */

static int cmd_export(const options_t *o)
{
    xrequire(o->data, "--data");
    xrequire(o->out, "--out");
    const char *format = o->format ? o->format : "sqlite";
    if (strcmp(format, "sqlite") != 0 && strcmp(format, "jsonl") != 0 && strcmp(format, "tiles") != 0)
        xdie(EXIT_USAGE, "--format is sqlite, jsonl or tiles");
    char db[4096], secret[4096], err[512], note[NOTE_TEXT_MAX], detail[300], card_text[CARD_TEXT_MAX + 1];
    snprintf(db, sizeof db, "%s/%s", o->data, BROKER_DB);
    snprintf(secret, sizeof secret, "%s/%s", o->data, BROKER_SECRET);
    identity_t *me = xload_identity(secret, NULL);
    store_t *store;
    rb_err rc = store_open(&store, db, false, err, sizeof err);
    if (rc != RB_OK)
        xdie(EXIT_USAGE, "%s (a running broker is exported with referral-admin export-ledger)", err);
    /* Who read the audit trail is itself in it, under the checkpoint the export carries. */
    struct passwd *pw = getpwuid(getuid());
    char who[80];
    snprintf(who, sizeof who, "local:%s", pw ? pw->pw_name : "?");
    snprintf(detail, sizeof detail, "export format=%s to=%.200s", format, o->out);
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.at_ms = tool_now_ms();
    e.action = ACTION_NAME(LEDGER_READ);
    e.party = who;
    e.outcome = "ok";
    e.detail = detail;
    size_t note_len;
    ledger_t *l = store_ledger(store);
    if ((rc = store_begin(store)) != RB_OK || (rc = store_event(store, &e, NULL)) != RB_OK ||
        (rc = ledger_checkpoint_now(l, identity_card(me), identity_sign_sk(me), e.at_ms, note, &note_len)) !=
            RB_OK ||
        (rc = store_commit(store)) != RB_OK)
        xfail(rc, db);
    card_text[card_to_text(identity_card(me), card_text)] = '\0';
    uint64_t size = ledger_size(l);
    if (strcmp(format, "tiles") == 0)
        rc = tiles_export(l, size, note, o->out);
    else
        rc = audit_write(l, size, card_text, strcmp(format, "jsonl") == 0 ? AUDIT_JSONL : AUDIT_SQLITE,
                         o->out, err, sizeof err);
    store_close(&store);
    identity_free(&me);
    if (rc != RB_OK)
        xdie(tool_exit_code(rc), "%s", strcmp(format, "tiles") == 0 ? rb_strerror(rc) : err);
    printf("exported %" PRIu64 " leaves to %s (%s)\n", size, o->out, format);
    return 0;
}

/* --- verify and replay ----------------------------------------------------------------------------------- */

static int cmd_verify(const options_t *o)
{
    audit_export_t x;
    open_export(&x, o->ledger);
    if (o->card != NULL) {
        card_t given;
        rb_err rc = card_read_file(&given, o->card);
        if (rc != RB_OK)
            xfail(rc, o->card);
        if (!card_equal(&given, &x.broker))
            xdie(EXIT_VERIFY, "%s: the export names another broker card (%s) than %s", o->ledger,
                 x.broker.name, o->card);
    }
    audit_stats_t st;
    char why[600];
    rb_err rc = audit_verify(&x, !o->no_signatures, &st, why, sizeof why);
    audit_close(&x);
    if (rc != RB_OK)
        xdie(rc == RB_ERR_INVALID ? EXIT_VERIFY : EXIT_USAGE, "%s: %s", o->ledger, why);
    printf("verified: %" PRIu64 " leaves, %" PRIu64 " checkpoints, %" PRIu64 " signatures", st.leaves,
           st.checkpoints, st.signatures);
    if (st.uncovered > 0)
        printf(" (the last %" PRIu64 " leaves are after the last checkpoint: not yet signed)", st.uncovered);
    printf("\n");
    return 0;
}

static int cmd_replay(const options_t *o)
{
    audit_export_t x;
    open_export(&x, o->ledger);
    char db[4096], err[600];
    if (o->data != NULL)
        snprintf(db, sizeof db, "%s/%s", o->data, BROKER_DB);
    int problems;
    rb_err rc = audit_replay(&x, o->data ? db : NULL, stdout, &problems, err, sizeof err);
    audit_close(&x);
    if (rc != RB_OK)
        xdie(EXIT_USAGE, "%s", err);
    return problems == 0 ? 0 : EXIT_VERIFY;
}

/* --- one message --------------------------------------------------------------------------------------------- */

#define EVENTS_MAX 4096

static int cmd_history(const options_t *o)
{
    uint8_t id[16];
    message_id(o->arg, id);
    audit_export_t x;
    open_export(&x, o->ledger);
    static uint64_t idx[EVENTS_MAX];
    size_t n;
    rb_err rc = ledger_find_message(x.ledger, id, idx, EVENTS_MAX, &n);
    for (size_t i = 0; rc == RB_OK && i < n; i++) {
        uint8_t *leaf;
        size_t len;
        Rb__LedgerEvent *e;
        if ((rc = ledger_leaf(x.ledger, idx[i], &leaf, &len)) != RB_OK)
            break;
        if ((rc = ledger_parse_leaf(leaf, len, &e)) == RB_OK) {
            char at[32];
            iso_time(e->at_ms, at);
            printf("%-8" PRIu64 " %s %-14s party=%s outcome=%s%s%s\n", idx[i], at, e->action,
                   e->party[0] ? e->party : "(broker)", e->outcome, e->detail[0] ? " " : "", e->detail);
            rb__ledger_event__free_unpacked(e, NULL);
        }
        free(leaf);
    }
    audit_close(&x);
    if (rc != RB_OK)
        xfail(rc, o->ledger);
    if (n == 0)
        xdie(EXIT_VERIFY, "%s: no event about message %s", o->ledger, o->arg);
    return 0;
}

static int cmd_prove(const options_t *o)
{
    uint8_t id[16];
    message_id(o->arg, id);
    xrequire(o->out, "--out");
    audit_export_t x;
    open_export(&x, o->ledger);
    char note[NOTE_TEXT_MAX], why[300];
    checkpoint_t cp;
    if (o->checkpoint != NULL) {
        char *text = read_text(o->checkpoint);
        snprintf(note, sizeof note, "%s", text);
        free(text);
    } else {
        bool found;
        uint64_t size;
        if (ledger_latest_checkpoint(x.ledger, UINT64_MAX, &found, note, &size) != RB_OK || !found)
            xdie(EXIT_VERIFY, "%s: no checkpoint in the export", o->ledger);
    }
    if (witness_open_checkpoint(&x.broker, note, strlen(note), &cp, why, sizeof why) != RB_OK)
        xdie(EXIT_VERIFY, "%s", why);
    merkle_hash_t root;
    if (ledger_root(x.ledger, cp.size, &root) != RB_OK || memcmp(root.bytes, cp.root.bytes, 32) != 0)
        xdie(EXIT_VERIFY, "the checkpoint of size %" PRIu64 " does not match this export's tree", cp.size);
    if (mkdir(o->out, 0755) != 0 && errno != EEXIST)
        xdie(EXIT_USAGE, "%s: %s", o->out, strerror(errno));
    static uint64_t idx[EVENTS_MAX];
    size_t n, written = 0;
    rb_err rc = ledger_find_message(x.ledger, id, idx, EVENTS_MAX, &n);
    for (size_t i = 0; rc == RB_OK && i < n && idx[i] < cp.size; i++) {
        uint8_t *leaf;
        size_t len, proof_len, text_len;
        merkle_hash_t path[PROOF_HASHES_MAX];
        static char text[PROOF_FILE_MAX];
        if ((rc = ledger_leaf(x.ledger, idx[i], &leaf, &len)) != RB_OK)
            break;
        rc = ledger_inclusion_proof(x.ledger, idx[i], cp.size, path, &proof_len);
        if (rc == RB_OK)
            rc = proof_format(idx[i], leaf, len, path, proof_len, note, strlen(note), text, sizeof text,
                              &text_len);
        free(leaf);
        char file[4200];
        snprintf(file, sizeof file, "%s/%" PRIu64 ".tlog-proof", o->out, idx[i]);
        if (rc == RB_OK && (rc = keyfile_write(file, text, text_len, 0644, false)) == RB_OK) {
            printf("%s\n", file);
            written++;
        }
    }
    audit_close(&x);
    if (rc != RB_OK)
        xfail(rc, o->out);
    if (written == 0)
        xdie(EXIT_VERIFY, "no event about %s under the checkpoint of size %" PRIu64, o->arg, cp.size);
    return 0;
}

static int cmd_check_proof(const options_t *o)
{
    xrequire(o->proof, "--proof");
    xrequire(o->card, "--broker-card");
    card_t broker;
    rb_err rc = card_read_file(&broker, o->card);
    if (rc != RB_OK)
        xfail(rc, o->card);
    char *text = read_text(o->proof), why[300];
    tlog_proof_t p;
    checkpoint_t cp;
    uint64_t index;
    static uint8_t leaf[PROOF_EXTRA_MAX];
    size_t leaf_len;
    if (proof_parse(text, strlen(text), &p) != RB_OK || p.extra == NULL ||
        keyfile_unbase64(p.extra, p.extra_len, leaf, sizeof leaf, &leaf_len) != RB_OK)
        xdie(EXIT_VERIFY, "%s: not a tlog-proof with its leaf in the extra line", o->proof);
    if (witness_check_proof(&broker, NULL, NULL, text, strlen(text), leaf, leaf_len, &cp, &index, why,
                            sizeof why) != RB_OK)
        xdie(EXIT_VERIFY, "%s: %s", o->proof, why);
    Rb__LedgerEvent *e;
    if (ledger_parse_leaf(leaf, leaf_len, &e) != RB_OK || e->index != index)
        xdie(EXIT_VERIFY, "%s: the leaf is not a ledger event at index %" PRIu64, o->proof, index);
    char at[32], hex[33] = "-";
    iso_time(e->at_ms, at);
    if (e->message_id.len == 16)
        wire_id_hex(e->message_id.data, hex);
    printf("verified: leaf %" PRIu64 " of %" PRIu64 " (%s): %s %s message=%s party=%s outcome=%s\n", index,
           cp.size, cp.origin, at, e->action, hex, e->party[0] ? e->party : "(broker)", e->outcome);
    rb__ledger_event__free_unpacked(e, NULL);
    free(text);
    return 0;
}

static int cmd_consistency(const options_t *o)
{
    xrequire(o->old, "--old");
    xrequire(o->new_, "--new");
    audit_export_t x;
    open_export(&x, o->ledger);
    char *old_text = read_text(o->old), *new_text = read_text(o->new_), why[300];
    checkpoint_t old, fresh;
    if (witness_open_checkpoint(&x.broker, old_text, strlen(old_text), &old, why, sizeof why) != RB_OK ||
        witness_open_checkpoint(&x.broker, new_text, strlen(new_text), &fresh, why, sizeof why) != RB_OK)
        xdie(EXIT_VERIFY, "%s", why);
    if (old.size > fresh.size)
        xdie(EXIT_USAGE, "--old (%" PRIu64 " leaves) is larger than --new (%" PRIu64 ")", old.size,
             fresh.size);
    merkle_hash_t proof[PROOF_HASHES_MAX];
    size_t n = 0;
    if (fresh.size > ledger_size(x.ledger))
        xdie(EXIT_VERIFY, "the export has %" PRIu64 " leaves, fewer than the new checkpoint's %" PRIu64,
             ledger_size(x.ledger), fresh.size);
    if (old.size > 0 && ledger_consistency_proof(x.ledger, old.size, fresh.size, proof, &n) != RB_OK)
        xdie(EXIT_USAGE, "cannot compute the proof from the export");
    rb_err rc = witness_check_consistency(&old, &fresh, proof, n, why, sizeof why);
    audit_close(&x);
    free(old_text);
    free(new_text);
    if (rc != RB_OK)
        xdie(EXIT_VERIFY, "%s", why);
    printf("consistent: the log of %" PRIu64 " leaves extends the one of %" PRIu64
           " (proof of %zu hashes):\n",
           fresh.size, old.size, n);
    for (size_t i = 0; i < n; i++) {
        char hex[65];
        keyfile_hex(proof[i].bytes, 32, hex);
        printf("  %s\n", hex);
    }
    return 0;
}

static int cmd_verifier_key(const options_t *o)
{
    xrequire(o->card, "--broker-card");
    card_t broker;
    rb_err rc = card_read_file(&broker, o->card);
    if (rc != RB_OK)
        xfail(rc, o->card);
    char origin[NOTE_NAME_MAX + 1], vkey[NOTE_VKEY_MAX];
    ledger_origin(&broker, origin);
    if ((rc = note_verifier_key(origin, broker.sign_pk, vkey)) != RB_OK)
        xfail(rc, o->card);
    printf("%s\n", vkey);
    return 0;
}

int main(int argc, char **argv)
{
    const char *command = tool_start(argc, argv, usage);
    options_t o = {0};
    parse_options(argc, argv, &o);
    static const struct {
        const char *name;
        int (*run)(const options_t *o);
    } commands[] = {
        {"export", cmd_export},
        {"verify", cmd_verify},
        {"replay", cmd_replay},
        {"history", cmd_history},
        {"prove", cmd_prove},
        {"check-proof", cmd_check_proof},
        {"consistency", cmd_consistency},
        {"verifier-key", cmd_verifier_key},
    };
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(command, commands[i].name) == 0)
            return commands[i].run(&o);
    xdie(EXIT_USAGE, "unknown command %s (see --help)", command);
}
