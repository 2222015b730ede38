/* referral-envelope -- seals a referral into an envelope, opens one, or shows its clear header.
 *
 *   referral-envelope seal --from SECRET --to CARD [--kind referral|supplement|withdrawal] [--ref MSGID]
 *                          [--passphrase-file F] < referral.json > envelope.bin
 *   referral-envelope open --as SECRET --trust DIR [--passphrase-file F] [--out FILE] < envelope.bin
 *   referral-envelope inspect < envelope.bin
 *
 * seal refuses a referral that breaks a validation rule, listing every problem with its field path. open
 * writes the plaintext only where no one else may read it: into --out FILE, made 0600, or to a standard
 * output that is not a file group or others may read (a shell's redirection makes one under umask 022).
 * Exit status: 0 success, 1 verification or validation failure, 2 usage or system error. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envelope.h"
#include "keyfile.h"
#include "pbjson.h"
#include "rbcrypto.h"
#include "referral.pb-c.h"
#include "referral_rules.h"
#include "tool.h"

/* --help, laid out as a manual page, which make install turns into referral-envelope(1) with
 * broker/dist/help-to-man.sh. A new command is one more block under COMMANDS, with its options under
 * OPTIONS and an example under EXAMPLES. */
static const char usage[] =
    "NAME\n"
    "    referral-envelope - seal a referral into an envelope, open one, or show its clear header\n"
    "\n"
    "SYNOPSIS\n"
    "    referral-envelope seal --from SECRET --to CARD [--kind referral|supplement|withdrawal]\n"
    "                           [--ref MESSAGE_ID] [--passphrase-file F] < referral.json > envelope.bin\n"
    "    referral-envelope open --as SECRET --trust DIR [--passphrase-file F] [--out FILE]\n"
    "                           < envelope.bin\n"
    "    referral-envelope inspect < envelope.bin\n"
    "    referral-envelope --help\n"
    "\n"
    "DESCRIPTION\n"
    "    The adapters do this on their own; this tool is for testing, for support, and for showing a\n"
    "    court what was sent. An envelope has a header in clear, signed by the sender, and a body\n"
    "    signed again by the sender (with the recipient and message id bound in) and sealed to the\n"
    "    recipient's key: only the recipient can open it, and the opened body proves who wrote it, for\n"
    "    whom.\n"
    "\n"
    "COMMANDS\n"
    "    seal\n"
    "        Reads a referral (proto3 JSON of rb.Referral) from standard input, validates it (every\n"
    "        problem is listed on standard error with its field path), signs it, seals it to CARD and\n"
    "        writes the envelope to standard output.\n"
    "    open\n"
    "        Verifies an envelope against the cards in DIR, decrypts it with SECRET, and writes the body\n"
    "        as JSON to FILE, or to standard output; the verified sender and message id go to standard\n"
    "        error. The body is the referral in clear: standard output that is a file group or others\n"
    "        may read (as a shell's > makes it under umask 022) is refused before anything is read.\n"
    "    inspect\n"
    "        Prints the clear header as JSON, verifying nothing (no key needed).\n"
    "\n"
    "OPTIONS\n"
    "    --from SECRET          seal: the sender's secret key file\n"
    "    --to CARD              seal: the recipient's card\n"
    "    --kind KIND            seal: referral (default), supplement or withdrawal\n"
    "    --ref MESSAGE_ID       seal: the message a supplement or withdrawal follows, 32 hex digits\n"
    "    --as SECRET            open: the recipient's secret key file\n"
    "    --trust DIR            open: a directory of the cards of trusted senders\n"
    "    --out FILE             open: write the referral into FILE, made 0600; never over a file\n"
    "    --passphrase-file F    the secret's passphrase, from the first line of F (mode 0600);\n"
    "                           without it, asked on the terminal when the secret has one\n"
    "    --help                 this text\n"
    "\n"
    "FILES\n"
    "    SECRET, CARD           key files made by referral-keys generate\n"
    "    DIR                    one card a file, as an adapter's trust directory\n"
    "    FILE                   the opened referral in clear, mode 0600 whatever the umask\n"
    "\n"
    "EXIT STATUS\n"
    "    0  done\n"
    "    1  a referral that breaks a validation rule, or an envelope that fails verification\n"
    "    2  usage or system error\n"
    "\n"
    "EXAMPLES\n"
    "    referral-envelope seal --from cpd-rms.secret --to sao-intake.card < 01-fatal-shooting.json \\\n"
    "        > env.bin\n"
    "    referral-envelope inspect < env.bin | jq '{kind, sender, recipient}'\n"
    "    referral-envelope open --as sao-intake.secret --trust trust/ --out referral.json < env.bin\n"
    "    referral-envelope open --as sao-intake.secret --trust trust/ < env.bin | jq .narrative\n"
    "\n"
    "SEE ALSO\n"
    "    referral-keys(1), referral-adapter(1)\n";

enum { OPT_FROM = 1, OPT_TO, OPT_KIND, OPT_REF, OPT_AS, OPT_TRUST, OPT_PASS_FILE, OPT_OUT };

typedef struct {
    const char *from, *to, *kind, *ref, *as, *trust, *pass_file, *out;
} options_t;

static void parse_options(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {
        {"from", required_argument, NULL, OPT_FROM},
        {"to", required_argument, NULL, OPT_TO},
        {"kind", required_argument, NULL, OPT_KIND},
        {"ref", required_argument, NULL, OPT_REF},
        {"as", required_argument, NULL, OPT_AS},
        {"trust", required_argument, NULL, OPT_TRUST},
        {"passphrase-file", required_argument, NULL, OPT_PASS_FILE},
        {"out", required_argument, NULL, OPT_OUT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_FROM:
            xoption_once(&o->from, optarg, "--from");
            break;
        case OPT_TO:
            xoption_once(&o->to, optarg, "--to");
            break;
        case OPT_KIND:
            xoption_once(&o->kind, optarg, "--kind");
            break;
        case OPT_REF:
            xoption_once(&o->ref, optarg, "--ref");
            break;
        case OPT_AS:
            xoption_once(&o->as, optarg, "--as");
            break;
        case OPT_TRUST:
            xoption_once(&o->trust, optarg, "--trust");
            break;
        case OPT_PASS_FILE:
            xoption_once(&o->pass_file, optarg, "--passphrase-file");
            break;
        case OPT_OUT:
            xoption_once(&o->out, optarg, "--out");
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

static Rb__Kind parse_kind(const char *name)
{
    if (name == NULL || strcmp(name, "referral") == 0)
        return RB__KIND__KIND_REFERRAL;
    if (strcmp(name, "supplement") == 0)
        return RB__KIND__KIND_SUPPLEMENT;
    if (strcmp(name, "withdrawal") == 0)
        return RB__KIND__KIND_WITHDRAWAL;
    xdie(EXIT_USAGE, "--kind must be referral, supplement or withdrawal");
}

static void parse_msg_id(const char *hex, msg_id_t *id)
{
    if (!keyfile_unhex(hex, id->bytes, MSG_ID_BYTES))
        xdie(EXIT_USAGE, "--ref must be a message id of 32 hex digits");
}

static void print_problems(const referral_problems_t *problems)
{
    for (size_t i = 0; i < problems->count; i++)
        fprintf(stderr, "  %s: %s\n", problems->items[i].path, problems->items[i].message);
    if (problems->truncated)
        fprintf(stderr, "  (more problems not shown)\n");
}

static int cmd_seal(const options_t *o)
{
    xrequire(o->from, "--from");
    xrequire(o->to, "--to");
    Rb__Kind kind = parse_kind(o->kind);
    msg_id_t ref;
    if (o->ref != NULL)
        parse_msg_id(o->ref, &ref);
    card_t to;
    rb_err rc = card_read_file(&to, o->to);
    if (rc != RB_OK)
        xfail(rc, o->to);
    identity_t *from = xload_identity(o->from, o->pass_file);

    size_t json_len;
    uint8_t *json = xread_stdin(ENVELOPE_MAX_BYTES, &json_len);
    char err[256];
    ProtobufCMessage *m;
    rc = pbjson_parse(&rb__referral__descriptor, (const char *)json, json_len, rbcrypto_wiping_allocator(),
                      &m, err, sizeof err);
    rbcrypto_secret_free(json);
    if (rc != RB_OK)
        xdie(tool_exit_code(rc), "referral refused: %s", err);
    Rb__Referral *referral = (Rb__Referral *)m;
    referral_problems_t problems;
    int64_t now = tool_now_ms();
    if (referral_validate(referral, kind, now, &problems) != RB_OK) {
        fprintf(stderr, "referral-envelope: referral refused: %zu problem%s\n", problems.count,
                problems.count == 1 ? "" : "s");
        print_problems(&problems);
        exit(EXIT_VERIFY);
    }
    uint8_t case_key[CASE_KEY_BYTES];
    envelope_case_key(from, referral->agency_ori, referral->rd_number, case_key);
    size_t body_len = protobuf_c_message_get_packed_size(m);
    uint8_t *body = rbcrypto_secret_alloc(body_len ? body_len : 1);
    if (body == NULL)
        xdie(EXIT_USAGE, "out of memory");
    protobuf_c_message_pack(m, body);
    protobuf_c_message_free_unpacked(m, rbcrypto_wiping_allocator());

    envelope_params_t params = {
        .kind = kind, .ref = o->ref ? &ref : NULL, .case_key = case_key, .created_ms = now};
    msg_id_t id;
    uint8_t *env;
    size_t env_len;
    rc = envelope_seal(from, &to, &params, body, body_len, &id, &env, &env_len);
    rbcrypto_secret_free(body);
    identity_free(&from);
    if (rc != RB_OK)
        xfail(rc, "seal");
    xwrite_stdout(env, env_len);
    free(env);
    return 0;
}

/* Dies unless the plaintext can go where it is to go, before a passphrase is asked or a byte read: --out
 * names no file yet, or standard output is not a file group or others may read. */
static void check_plaintext_out(const char *out)
{
    struct stat st;
    if (out != NULL && lstat(out, &st) == 0)
        xdie(EXIT_USAGE, "%s exists: the referral is never written over a file", out);
    if (out == NULL && fstat(STDOUT_FILENO, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) != 0)
        xdie(EXIT_USAGE,
             "standard output is a file group or others may read (mode %04o), and the referral is in clear: "
             "use --out FILE (made 0600), or chmod 600 the file first",
             (unsigned)(st.st_mode & 07777));
}

static int cmd_open(const options_t *o)
{
    xrequire(o->as, "--as");
    xrequire(o->trust, "--trust");
    check_plaintext_out(o->out);
    char err[512];
    trust_t *trust;
    rb_err rc = trust_load_dir(&trust, o->trust, err, sizeof err);
    if (rc != RB_OK)
        xdie(tool_exit_code(rc), "trust store: %s", err);
    identity_t *as = xload_identity(o->as, o->pass_file);
    size_t len;
    uint8_t *env = xread_stdin(ENVELOPE_MAX_BYTES, &len);
    envelope_opened_t opened;
    rc = envelope_open(as, trust, env, len, &opened);
    rbcrypto_secret_free(env);
    identity_free(&as);
    trust_free(&trust);
    if (rc != RB_OK)
        xfail(rc, "envelope refused");
    char *json;
    rc = pbjson_format(opened.message, PBJSON_PRETTY, &json);
    if (rc != RB_OK)
        xfail(rc, "formatting the body");
    char id[2 * MSG_ID_BYTES + 1], key[2 * RB_KEY_ID_BYTES + 1];
    keyfile_hex(opened.header->message_id.data, MSG_ID_BYTES, id);
    card_key_id_hex(opened.sender.key_id, key);
    fprintf(stderr, "verified: message %s from %s (%s, key %s)\n", id, opened.sender.name,
            opened.sender.agency, key);
    size_t json_len = strlen(json);
    if (o->out != NULL) {
        char *text = rbcrypto_secret_alloc(json_len + 1); /* the referral in clear: wiped when freed */
        rc = text != NULL ? RB_OK : RB_ERR_NOMEM;
        if (rc == RB_OK) {
            memcpy(text, json, json_len);
            text[json_len] = '\n';
            rc = keyfile_write(o->out, text, json_len + 1, 0600, false);
        }
        rbcrypto_secret_free(text);
        if (rc != RB_OK)
            xdie(EXIT_USAGE, "%s: %s", o->out, rc == RB_ERR_IO ? strerror(errno) : rb_strerror(rc));
    } else {
        xwrite_stdout(json, json_len);
        xwrite_stdout("\n", 1);
    }
    pbjson_free(json);
    envelope_opened_clear(&opened);
    return 0;
}

static int cmd_inspect(void)
{
    size_t len;
    uint8_t *env = xread_stdin(ENVELOPE_MAX_BYTES, &len);
    Rb__Header *h;
    rb_err parsed = envelope_peek_header(env, len, &h);
    rbcrypto_secret_free(env);
    if (parsed != RB_OK)
        xfail(parsed, "not an envelope");
    char *json;
    rb_err rc = pbjson_format(&h->base, PBJSON_PRETTY, &json);
    if (rc != RB_OK)
        xfail(rc, "formatting the header");
    xwrite_stdout(json, strlen(json));
    xwrite_stdout("\n", 1);
    pbjson_free(json);
    rb__header__free_unpacked(h, NULL);
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = tool_start(argc, argv, usage);
    options_t o;
    parse_options(argc - 1, argv + 1, &o);
    if (strcmp(cmd, "seal") == 0)
        return cmd_seal(&o);
    if (strcmp(cmd, "open") == 0)
        return cmd_open(&o);
    if (strcmp(cmd, "inspect") == 0)
        return cmd_inspect();
    xdie(EXIT_USAGE, "unknown command '%s' (see --help)", cmd);
}
