/* referral-keys -- creates identities and inspects cards.
 *
 *   referral-keys generate --name N --role R --agency ORI --out PREFIX [--days D]
 *                          [--no-passphrase | --passphrase-file F] [--force]
 *   referral-keys show CARD | fingerprint CARD | verify-card CARD
 *   referral-keys passwd SECRET [--passphrase-file OLD] [--new-passphrase-file NEW | --no-passphrase]
 *   referral-keys rotate --old SECRET --out PREFIX [--days D] [--passphrase-file OLD]
 *                        [--new-passphrase-file NEW | --no-passphrase] [--force]
 *
 * Exit status: 0 success, 1 a card or key that fails verification, 2 a usage or system error. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "card.h"
#include "identity.h"
#include "keyfile.h"
#include "ledger.h"
#include "rbcrypto.h"
#include "tool.h"

/* --help, laid out as a manual page, which make install turns into referral-keys(1) with
 * broker/dist/help-to-man.sh. A new command is one more block under COMMANDS, with its options under
 * OPTIONS and an example under EXAMPLES. */
static const char usage[] =
    "NAME\n"
    "    referral-keys - create identities, and inspect the public cards admins exchange\n"
    "\n"
    "SYNOPSIS\n"
    "    referral-keys generate --name N --role source|sink|broker|admin --agency ORI --out PREFIX\n"
    "                           [--days D] [--no-passphrase | --passphrase-file F] [--force]\n"
    "    referral-keys show CARD\n"
    "    referral-keys fingerprint CARD\n"
    "    referral-keys verify-card CARD\n"
    "    referral-keys passwd SECRET [--passphrase-file OLD] [--new-passphrase-file NEW | --no-passphrase]\n"
    "    referral-keys rotate --old SECRET --out PREFIX [--days D] [--passphrase-file OLD]\n"
    "                         [--new-passphrase-file NEW | --no-passphrase] [--force]\n"
    "    referral-keys --help\n"
    "\n"
    "DESCRIPTION\n"
    "    Every participant (broker, adapter, admin) has an identity: an Ed25519 signing key and an\n"
    "    X25519 key for CURVE and sealing. Its public card (name, role, agency ORI, both public keys, key\n"
    "    id, validity, self-signature) is what admins exchange and install: an adapter trusts the cards\n"
    "    in its trust directory, the broker those registered with referral-admin adapter add.\n"
    "\n"
    "COMMANDS\n"
    "    generate\n"
    "        Creates PREFIX.secret (mode 0600, encrypted with a passphrase by Argon2id and\n"
    "        XChaCha20-Poly1305 unless --no-passphrase) and PREFIX.card (valid from 5 minutes ago,\n"
    "        for clocks a little behind, for D days, default 365), and prints the key id and the\n"
    "        fingerprint. Adapters and brokers run unattended: their secrets are made with\n"
    "        --no-passphrase and protected by their mode.\n"
    "    show\n"
    "        Prints every field of a card after checking it (for a broker, also its checkpoint key in\n"
    "        signed-note form).\n"
    "    fingerprint\n"
    "        Prints the card's fingerprint, to compare over a second channel (by telephone) before\n"
    "        installing a card received by e-mail.\n"
    "    verify-card\n"
    "        Checks the card's format and self-signature and that it is valid now.\n"
    "    passwd\n"
    "        Re-encrypts a secret file under a new passphrase, or none.\n"
    "    rotate\n"
    "        Makes the successor of the identity in SECRET: PREFIX.secret and PREFIX.card with the same\n"
    "        name, role and agency and new keys, and PREFIX.cert, the old key's certification of the new\n"
    "        card, which referral-admin key add --card PREFIX.card sends with it. The old key must be\n"
    "        valid; it stays valid for the broker's rotation overlap, then retires by itself.\n"
    "\n"
    "OPTIONS\n"
    "    --name N               a-z 0-9 . _ -, 1 to 64, starting with a letter or digit\n"
    "    --role ROLE            source (police records), sink (intake), broker or admin\n"
    "    --agency ORI           the agency's ORI: two capital letters then seven capitals or digits\n"
    "    --out PREFIX           where to write PREFIX.secret and PREFIX.card\n"
    "    --days D               validity, 1 to 3660 days (default 365)\n"
    "    --no-passphrase        an unattended secret, in clear (mode 0600)\n"
    "    --passphrase-file F    the passphrase, from the first line of F (mode 0600); without it,\n"
    "                           asked on the terminal (twice for a new one)\n"
    "    --new-passphrase-file NEW\n"
    "                           passwd: the new passphrase\n"
    "    --old SECRET           rotate: the identity to succeed (its passphrase: --passphrase-file)\n"
    "    --force                generate, rotate: overwrite existing files\n"
    "    --help                 this text\n"
    "\n"
    "FILES\n"
    "    PREFIX.secret          the secret keys: a labelled text line, then base64\n"
    "    PREFIX.card            the public card, the same way\n"
    "    PREFIX.cert            rotate: the old key's certification of the new card\n"
    "\n"
    "EXIT STATUS\n"
    "    0  done\n"
    "    1  a card or secret that fails verification (bad signature, expired, wrong passphrase)\n"
    "    2  usage or system error (a bad option, a file in the way without --force)\n"
    "\n"
    "EXAMPLES\n"
    "    referral-keys generate --name ops-admin --role admin --agency ILCPD0000 --out ops-admin\n"
    "    referral-keys generate --name cpd-rms --role source --agency ILCPD0000 --out cpd-rms \\\n"
    "        --no-passphrase\n"
    "    referral-keys fingerprint sao-intake.card\n"
    "    referral-keys passwd ops-admin.secret\n"
    "    referral-keys rotate --old cpd-rms.secret --out cpd-rms-2026 --no-passphrase\n"
    "\n"
    "SEE ALSO\n"
    "    referral-admin(1), referral-broker(1), referral-adapter(1), referral-envelope(1)\n";

enum {
    OPT_NAME = 1,
    OPT_ROLE,
    OPT_AGENCY,
    OPT_OUT,
    OPT_DAYS,
    OPT_NO_PASS,
    OPT_PASS_FILE,
    OPT_NEW_PASS_FILE,
    OPT_FORCE,
    OPT_OLD
};

typedef struct {
    const char *name, *role, *agency, *out, *days, *pass_file, *new_pass_file, *old;
    const char *no_pass, *force; /* non-NULL when given */
    const char *arg;             /* the one positional argument */
} options_t;

static void parse_options(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {
        {"name", required_argument, NULL, OPT_NAME},
        {"role", required_argument, NULL, OPT_ROLE},
        {"agency", required_argument, NULL, OPT_AGENCY},
        {"out", required_argument, NULL, OPT_OUT},
        {"days", required_argument, NULL, OPT_DAYS},
        {"no-passphrase", no_argument, NULL, OPT_NO_PASS},
        {"passphrase-file", required_argument, NULL, OPT_PASS_FILE},
        {"new-passphrase-file", required_argument, NULL, OPT_NEW_PASS_FILE},
        {"force", no_argument, NULL, OPT_FORCE},
        {"old", required_argument, NULL, OPT_OLD},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_NAME:
            xoption_once(&o->name, optarg, "--name");
            break;
        case OPT_ROLE:
            xoption_once(&o->role, optarg, "--role");
            break;
        case OPT_AGENCY:
            xoption_once(&o->agency, optarg, "--agency");
            break;
        case OPT_OUT:
            xoption_once(&o->out, optarg, "--out");
            break;
        case OPT_DAYS:
            xoption_once(&o->days, optarg, "--days");
            break;
        case OPT_NO_PASS:
            xoption_once(&o->no_pass, "yes", "--no-passphrase");
            break;
        case OPT_PASS_FILE:
            xoption_once(&o->pass_file, optarg, "--passphrase-file");
            break;
        case OPT_NEW_PASS_FILE:
            xoption_once(&o->new_pass_file, optarg, "--new-passphrase-file");
            break;
        case OPT_FORCE:
            xoption_once(&o->force, "yes", "--force");
            break;
        case OPT_OLD:
            xoption_once(&o->old, optarg, "--old");
            break;
        case 'h':
            fputs(usage, stdout);
            exit(0);
        default:
            xdie(EXIT_USAGE, "bad option (see --help)");
        }
    }
    if (optind < argc)
        o->arg = argv[optind++];
    if (optind < argc)
        xdie(EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
}

/* Writes the secret under a passphrase from pass_file or the terminal, or in clear when no_pass. */
static void save_secret(const identity_t *id, const char *path, const char *pass_file, bool no_pass,
                        bool force)
{
    char *pass = NULL;
    size_t pass_len = 0;
    if (!no_pass)
        pass = xpassphrase(pass_file, "New passphrase: ", true, &pass_len);
    rb_err rc = identity_save(id, path, pass, pass_len, RB_PWHASH_OPSLIMIT_DEFAULT,
                              RB_PWHASH_MEMLIMIT_DEFAULT, force);
    rbcrypto_secret_free(pass);
    if (rc != RB_OK)
        xfail(rc, path);
}

/* A new card is valid from a few minutes before it is made: a host whose clock is a little behind the one
 * that made the key (an adapter's, the broker's) would otherwise refuse what the key signs there at once,
 * and every referral the adapter signed in that gap would be refused for good as signed by a key not yet
 * valid (a fault run found it: an adapter whose clock was 30 s behind, then rotated). */
#define CREATED_BEFORE_NOW_S 300

static uint64_t lifetime_days(const options_t *o)
{
    long days = 365;
    if (o->days != NULL) {
        char *end;
        days = strtol(o->days, &end, 10);
        if (*end != '\0' || days < 1 || days > 3660)
            xdie(EXIT_USAGE, "--days must be a whole number from 1 to 3660");
    }
    return (uint64_t)days;
}

static void out_path(char *path, size_t cap, const char *prefix, const char *ext)
{
    if (snprintf(path, cap, "%s.%s", prefix, ext) >= (int)cap)
        xdie(EXIT_USAGE, "--out is too long");
}

/* PREFIX.secret and PREFIX.card, and PREFIX.cert when cert is given; refuses to replace any of them
 * unless force, before asking for a passphrase. */
static void write_identity(const identity_t *id, const char *prefix, const char *pass_file, bool no_pass,
                           bool force, const card_cert_t *cert)
{
    char secret_path[4096], card_path[4096], cert_path[4096];
    out_path(secret_path, sizeof secret_path, prefix, "secret");
    out_path(card_path, sizeof card_path, prefix, "card");
    out_path(cert_path, sizeof cert_path, prefix, "cert");
    card_t existing;
    card_cert_t existing_cert;
    if (!force && card_read_file(&existing, card_path) != RB_ERR_IO)
        xfail(RB_ERR_EXISTS, card_path);
    if (!force && cert != NULL && card_cert_read_file(&existing_cert, cert_path) != RB_ERR_IO)
        xfail(RB_ERR_EXISTS, cert_path);
    save_secret(id, secret_path, pass_file, no_pass, force);
    rb_err rc = card_write_file(identity_card(id), card_path, force);
    if (rc != RB_OK)
        xfail(rc, card_path);
    if (cert != NULL && (rc = card_cert_write_file(cert, cert_path, force)) != RB_OK)
        xfail(rc, cert_path);
    char hex[2 * RB_KEY_ID_BYTES + 1], fp[CARD_FINGERPRINT_MAX];
    card_key_id_hex(identity_card(id)->key_id, hex);
    card_fingerprint(identity_card(id), fp);
    printf("wrote %s and %s%s%s\nkey id %s\nfingerprint %s\n", secret_path, card_path, cert ? " and " : "",
           cert ? cert_path : "", hex, fp);
}

static int cmd_generate(const options_t *o)
{
    xrequire(o->name, "--name");
    xrequire(o->role, "--role");
    xrequire(o->agency, "--agency");
    xrequire(o->out, "--out");
    if (o->arg != NULL)
        xdie(EXIT_USAGE, "unexpected argument '%s'", o->arg);
    if (o->no_pass && o->pass_file)
        xdie(EXIT_USAGE, "--no-passphrase and --passphrase-file exclude each other");
    card_role role;
    if (!card_role_parse(o->role, &role))
        xdie(EXIT_USAGE, "--role must be source, sink, broker or admin");
    if (!card_name_ok(o->name))
        xdie(EXIT_USAGE, "--name must be 1-64 of a-z 0-9 . _ - starting with a letter or digit");
    if (!card_agency_ok(o->agency))
        xdie(EXIT_USAGE, "--agency must be an ORI: two capital letters then seven capitals or digits");
    identity_t *id;
    rb_err rc = identity_generate(&id, o->name, role, o->agency, (uint64_t)time(NULL) - CREATED_BEFORE_NOW_S,
                                  lifetime_days(o) * 86400);
    if (rc != RB_OK)
        xfail(rc, "generate");
    write_identity(id, o->out, o->pass_file, o->no_pass != NULL, o->force != NULL, NULL);
    identity_free(&id);
    return 0;
}

static int cmd_rotate(const options_t *o)
{
    xrequire(o->old, "--old");
    xrequire(o->out, "--out");
    if (o->arg != NULL || o->name || o->role || o->agency)
        xdie(EXIT_USAGE, "rotate keeps the old card's name, role and agency (no --name, --role, --agency)");
    if (o->no_pass && o->new_pass_file)
        xdie(EXIT_USAGE, "--no-passphrase and --new-passphrase-file exclude each other");
    identity_t *old = xload_identity(o->old, o->pass_file), *next;
    const card_t *was = identity_card(old);
    uint64_t now = (uint64_t)time(NULL);
    rb_err rc = card_valid_at(was, now);
    if (rc != RB_OK)
        xdie(EXIT_VERIFY,
             "%s: the old key is no longer valid; a rotation must be certified by a valid key "
             "(register a new card with `referral-admin adapter add` instead)",
             o->old);
    /* Created after the old card all the same: senders seal to the newest card of a name. */
    uint64_t created =
        now - CREATED_BEFORE_NOW_S > was->created ? now - CREATED_BEFORE_NOW_S : was->created + 1;
    if ((rc = identity_generate(&next, was->name, (card_role)was->role, was->agency, created,
                                lifetime_days(o) * 86400)) != RB_OK)
        xfail(rc, "rotate");
    card_cert_t cert;
    if ((rc = card_certify(was, identity_sign_sk(old), identity_card(next), &cert)) != RB_OK)
        xfail(rc, "certifying the new card");
    write_identity(next, o->out, o->new_pass_file, o->no_pass != NULL, o->force != NULL, &cert);
    identity_free(&next);
    identity_free(&old);
    return 0;
}

static card_t read_card(const options_t *o)
{
    xrequire(o->arg, "CARD");
    card_t card;
    rb_err rc = card_read_file(&card, o->arg);
    if (rc != RB_OK)
        xfail(rc, o->arg);
    return card;
}

static void format_time(uint64_t t, char *out, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL || strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, cap, "%llu", (unsigned long long)t);
}

static int cmd_show(const options_t *o)
{
    card_t card = read_card(o);
    char hex[2 * RB_KEY_ID_BYTES + 1], fp[CARD_FINGERPRINT_MAX], created[32], expires[32];
    char sign_pk[2 * RB_SIGN_PK_BYTES + 1], box_pk[2 * RB_BOX_PK_BYTES + 1];
    card_key_id_hex(card.key_id, hex);
    card_fingerprint(&card, fp);
    format_time(card.created, created, sizeof created);
    format_time(card.expires, expires, sizeof expires);
    keyfile_hex(card.sign_pk, sizeof card.sign_pk, sign_pk);
    keyfile_hex(card.box_pk, sizeof card.box_pk, box_pk);
    printf("name         %s\nrole         %s\nagency       %s\nkey id       %s\nsigning key  %s\n"
           "sealing key  %s\ncreated      %s\nexpires      %s\nfingerprint  %s\n",
           card.name, card_role_name((card_role)card.role), card.agency, hex, sign_pk, box_pk, created,
           expires, fp);
    /* A broker's key also signs its ledger's checkpoints: the key in the form transparency-log tools take. */
    char origin[NOTE_NAME_MAX + 1], vkey[NOTE_VKEY_MAX];
    ledger_origin(&card, origin);
    if (card.role == CARD_ROLE_BROKER && note_verifier_key(origin, card.sign_pk, vkey) == RB_OK)
        printf("ledger key   %s\n", vkey);
    return 0;
}

static int cmd_fingerprint(const options_t *o)
{
    card_t card = read_card(o);
    char fp[CARD_FINGERPRINT_MAX];
    card_fingerprint(&card, fp);
    printf("%s\n", fp);
    return 0;
}

static int cmd_verify_card(const options_t *o)
{
    card_t card = read_card(o);
    rb_err rc = card_valid_at(&card, (uint64_t)time(NULL));
    if (rc != RB_OK)
        xfail(rc, o->arg);
    char expires[32];
    format_time(card.expires, expires, sizeof expires);
    printf("%s: good card for %s (%s, %s), valid until %s\n", o->arg, card.name,
           card_role_name((card_role)card.role), card.agency, expires);
    return 0;
}

static int cmd_passwd(const options_t *o)
{
    xrequire(o->arg, "SECRET");
    if (o->no_pass && o->new_pass_file)
        xdie(EXIT_USAGE, "--no-passphrase and --new-passphrase-file exclude each other");
    identity_t *id = xload_identity(o->arg, o->pass_file);
    save_secret(id, o->arg, o->new_pass_file, o->no_pass != NULL, true);
    identity_free(&id);
    printf("%s: passphrase changed\n", o->arg);
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = tool_start(argc, argv, usage);
    options_t o;
    parse_options(argc - 1, argv + 1, &o);
    if (strcmp(cmd, "generate") == 0)
        return cmd_generate(&o);
    if (strcmp(cmd, "show") == 0)
        return cmd_show(&o);
    if (strcmp(cmd, "fingerprint") == 0)
        return cmd_fingerprint(&o);
    if (strcmp(cmd, "verify-card") == 0)
        return cmd_verify_card(&o);
    if (strcmp(cmd, "passwd") == 0)
        return cmd_passwd(&o);
    if (strcmp(cmd, "rotate") == 0)
        return cmd_rotate(&o);
    xdie(EXIT_USAGE, "unknown command '%s' (see --help)", cmd);
}
