/* referral-peer -- a minimal adapter on the client library: submits envelopes, or receives them.
 *
 *   referral-peer submit  --broker EP --broker-card CARD --as SECRET ENVELOPE...
 *   referral-peer receive --broker EP --broker-card CARD --as SECRET --out DIR [--count N]
 *                         [--idle-ms T] [--no-confirm] [--ack --trust DIR]
 *
 * receive stores each delivered envelope as DIR/<message id>.env (written durably before the CONFIRM, and
 * only once however often it is delivered), and with --ack opens it, applies the validation rules and
 * answers the sender with a signed ACK: ACCEPTED with an intake number, or REJECTED with every problem.
 * It is the simplest real sink; the full connectors build on the same library.
 * Exit status: 0 done, 1 something refused, 2 usage or system error (or nothing received in time). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client.h"
#include "envelope.h"
#include "keyfile.h"
#include "pbjson.h"
#include "rbcrypto.h"
#include "referral_rules.h"
#include "tool.h"
#include "wire.h"

static const char usage[] =
    "usage: referral-peer COMMAND --broker ENDPOINT --broker-card CARD --as SECRET [--passphrase-file F] "
    "...\n"
    "\n"
    "  submit ENVELOPE...     submits each envelope file; prints its receipt or refusal\n"
    "  receive --out DIR [--count N] [--idle-ms T] [--no-confirm] [--ack --trust DIR]\n"
    "      stores deliveries in DIR and confirms them; stops after N new ones, or T ms without any\n"
    "      (default 10000); --ack opens, validates and answers each with a signed ACK\n"
    "\n"
    "Exit status: 0 done, 1 something refused, 2 usage or system error.\n";

enum {
    OPT_BROKER = 1,
    OPT_BROKER_CARD,
    OPT_AS,
    OPT_PASS_FILE,
    OPT_OUT,
    OPT_COUNT,
    OPT_IDLE,
    OPT_NO_CONFIRM,
    OPT_ACK,
    OPT_TRUST
};

typedef struct {
    const char *broker, *broker_card, *as, *pass_file, *out, *count, *idle, *no_confirm, *ack, *trust;
    char **files;
    int n_files;
} options_t;

static void parse_options(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {
        {"broker", required_argument, NULL, OPT_BROKER},
        {"broker-card", required_argument, NULL, OPT_BROKER_CARD},
        {"as", required_argument, NULL, OPT_AS},
        {"passphrase-file", required_argument, NULL, OPT_PASS_FILE},
        {"out", required_argument, NULL, OPT_OUT},
        {"count", required_argument, NULL, OPT_COUNT},
        {"idle-ms", required_argument, NULL, OPT_IDLE},
        {"no-confirm", no_argument, NULL, OPT_NO_CONFIRM},
        {"ack", no_argument, NULL, OPT_ACK},
        {"trust", required_argument, NULL, OPT_TRUST},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_BROKER:
            xoption_once(&o->broker, optarg, "--broker");
            break;
        case OPT_BROKER_CARD:
            xoption_once(&o->broker_card, optarg, "--broker-card");
            break;
        case OPT_AS:
            xoption_once(&o->as, optarg, "--as");
            break;
        case OPT_PASS_FILE:
            xoption_once(&o->pass_file, optarg, "--passphrase-file");
            break;
        case OPT_OUT:
            xoption_once(&o->out, optarg, "--out");
            break;
        case OPT_COUNT:
            xoption_once(&o->count, optarg, "--count");
            break;
        case OPT_IDLE:
            xoption_once(&o->idle, optarg, "--idle-ms");
            break;
        case OPT_NO_CONFIRM:
            xoption_once(&o->no_confirm, "yes", "--no-confirm");
            break;
        case OPT_ACK:
            xoption_once(&o->ack, "yes", "--ack");
            break;
        case OPT_TRUST:
            xoption_once(&o->trust, optarg, "--trust");
            break;
        case 'h':
            fputs(usage, stdout);
            exit(0);
        default:
            xdie(EXIT_USAGE, "bad option (see --help)");
        }
    }
    o->files = argv + optind;
    o->n_files = argc - optind;
}

static client_t *connect_as(const options_t *o, identity_t **me, uint32_t credit)
{
    xrequire(o->broker, "--broker");
    xrequire(o->broker_card, "--broker-card");
    xrequire(o->as, "--as");
    card_t broker;
    rb_err rc = card_read_file(&broker, o->broker_card);
    if (rc != RB_OK)
        xfail(rc, o->broker_card);
    *me = xload_identity(o->as, o->pass_file);
    client_t *c;
    char err[512];
    if (client_connect(&c, o->broker, *me, &broker, credit, 10000, err, sizeof err) != RB_OK)
        xdie(EXIT_USAGE, "%s", err);
    return c;
}

/* Prints the outcome of one submission; false when it was refused. */
static bool submit_one(client_t *c, const uint8_t *env, size_t len, const char *what)
{
    client_result_t r;
    rb_err rc = client_submit(c, env, len, 15000, &r);
    if (rc != RB_OK) {
        printf("%s: no receipt: %s\n", what, rb_strerror(rc));
        return false;
    }
    if (!r.accepted) {
        printf("%s: refused %s: %s\n", what, wire_error_name(r.code), r.reason);
        return false;
    }
    printf("%s: receipt seq=%llu\n", what, (unsigned long long)r.event_seq);
    return true;
}

static int cmd_submit(const options_t *o)
{
    if (o->n_files == 0)
        xdie(EXIT_USAGE, "no envelope files given");
    identity_t *me;
    client_t *c = connect_as(o, &me, 0);
    bool all = true;
    for (int i = 0; i < o->n_files; i++) {
        struct stat st;
        FILE *f = fopen(o->files[i], "rb");
        if (f == NULL || fstat(fileno(f), &st) != 0 || st.st_size > 2 * ENVELOPE_MAX_BYTES)
            xdie(EXIT_USAGE, "%s: cannot read it, or it is too large", o->files[i]);
        uint8_t *env = malloc((size_t)st.st_size + 1);
        if (env == NULL || fread(env, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
            xdie(EXIT_USAGE, "%s: cannot read it", o->files[i]);
        fclose(f);
        all &= submit_one(c, env, (size_t)st.st_size, o->files[i]);
        free(env);
    }
    fflush(stdout);
    client_close(&c);
    identity_free(&me);
    return all ? 0 : EXIT_VERIFY;
}

/* Opens a delivered referral, validates it and submits the signed ACK to its sender. */
static void acknowledge(client_t *c, const identity_t *me, const trust_t *trust, const uint8_t *env,
                        size_t len, unsigned long number)
{
    envelope_opened_t opened;
    rb_err rc = envelope_open(me, trust, env, len, &opened);
    if (rc != RB_OK) {
        printf("cannot open: %s\n", rb_strerror(rc));
        return;
    }
    char hex[33];
    wire_id_hex(opened.header->message_id.data, hex);
    if (opened.header->kind == RB__KIND__KIND_ACK) {
        Rb__AckBody *ack = (Rb__AckBody *)opened.message;
        printf("ack for referral from %s: %s %s\n", opened.sender.name,
               ack->status == RB__ACK_STATUS__ACK_STATUS_ACCEPTED ? "ACCEPTED" : "REJECTED",
               ack->intake_reference);
        envelope_opened_clear(&opened);
        return;
    }
    referral_problems_t problems;
    int64_t now = tool_now_ms();
    bool valid =
        referral_validate((Rb__Referral *)opened.message, opened.header->kind, now, &problems) == RB_OK;
    Rb__AckBody ack = RB__ACK_BODY__INIT;
    Rb__Problem items[REFERRAL_MAX_PROBLEMS], *ptrs[REFERRAL_MAX_PROBLEMS];
    char reference[64];
    snprintf(reference, sizeof reference, "SAO-%lu", number);
    ack.status = valid ? RB__ACK_STATUS__ACK_STATUS_ACCEPTED : RB__ACK_STATUS__ACK_STATUS_REJECTED;
    ack.intake_reference = valid ? reference : "";
    ack.received_sha256 = (ProtobufCBinaryData){RB_HASH_BYTES, opened.envelope_sha256};
    ack.decided_ms = now;
    for (size_t i = 0; !valid && i < problems.count; i++) {
        rb__problem__init(&items[i]);
        items[i].path = problems.items[i].path;
        items[i].message = problems.items[i].message;
        ptrs[i] = &items[i];
    }
    ack.problems = ptrs;
    ack.n_problems = valid ? 0 : problems.count;
    uint8_t body[8192];
    size_t body_len = rb__ack_body__get_packed_size(&ack);
    msg_id_t ref, id;
    memcpy(ref.bytes, opened.header->message_id.data, MSG_ID_BYTES);
    envelope_params_t p = {
        .kind = RB__KIND__KIND_ACK, .ref = &ref, .ack_status = ack.status, .created_ms = now};
    uint8_t *out = NULL;
    size_t out_len;
    if (body_len <= sizeof body) {
        rb__ack_body__pack(&ack, body);
        rc = envelope_seal(me, &opened.sender, &p, body, body_len, &id, &out, &out_len);
    } else {
        rc = RB_ERR_TOO_BIG;
    }
    if (rc == RB_OK) {
        char what[80];
        snprintf(what, sizeof what, "ack %s %s", hex, valid ? "ACCEPTED" : "REJECTED");
        submit_one(c, out, out_len, what);
    } else {
        printf("cannot seal the ACK for %s: %s\n", hex, rb_strerror(rc));
    }
    free(out);
    envelope_opened_clear(&opened);
}

static int cmd_receive(const options_t *o)
{
    xrequire(o->out, "--out");
    if (o->ack)
        xrequire(o->trust, "--trust");
    long want = o->count ? strtol(o->count, NULL, 10) : 0;
    int idle_ms = o->idle ? atoi(o->idle) : 10000;
    trust_t *trust = NULL;
    char err[512];
    if (o->ack && trust_load_dir(&trust, o->trust, err, sizeof err) != RB_OK)
        xdie(EXIT_USAGE, "trust store: %s", err);
    identity_t *me;
    client_t *c = connect_as(o, &me, 16);
    long got = 0;
    int status = 0;
    while (want == 0 || got < want) {
        uint8_t *env;
        size_t len;
        uint32_t attempt;
        if (client_receive(c, idle_ms, &env, &len, &attempt) != RB_OK) {
            if (want > 0)
                status = EXIT_USAGE; /* fewer than asked for */
            break;
        }
        msg_id_t mid;
        const uint8_t *id = mid.bytes;
        char hex[33], path[4096];
        if (envelope_peek_id(env, len, &mid) != RB_OK) {
            printf("delivery that is not an envelope, %zu bytes\n", len);
            free(env);
            continue;
        }
        wire_id_hex(id, hex);
        snprintf(path, sizeof path, "%s/%s.env", o->out, hex);
        /* Stored once, durably, before the CONFIRM: a redelivery finds it there and is only confirmed. */
        rb_err rc = keyfile_write(path, env, len, 0600, false);
        bool duplicate = rc == RB_ERR_EXISTS;
        if (rc != RB_OK && !duplicate)
            xfail(rc, path);
        printf("received %s attempt=%u%s\n", hex, attempt, duplicate ? " duplicate" : "");
        if (!o->no_confirm)
            client_confirm(c, id);
        if (!duplicate) {
            got++;
            if (o->ack)
                acknowledge(c, me, trust, env, len, (unsigned long)got);
        }
        fflush(stdout);
        free(env);
    }
    const char *reason;
    if (client_last_error(c, &reason) != 0)
        printf("broker error: %s\n", reason);
    client_close(&c);
    identity_free(&me);
    trust_free(&trust);
    return status;
}

int main(int argc, char **argv)
{
    const char *cmd = tool_start(argc, argv, usage);
    options_t o;
    parse_options(argc - 1, argv + 1, &o);
    if (strcmp(cmd, "submit") == 0)
        return cmd_submit(&o);
    if (strcmp(cmd, "receive") == 0)
        return cmd_receive(&o);
    xdie(EXIT_USAGE, "unknown command '%s' (see --help)", cmd);
}
