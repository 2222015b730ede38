/* referral-publish -- the public transparency data of a police source adapter's referrals.
 *
 *   referral-publish [run] --config ADAPTER_CONFIG --out DIR --as-of YYYY-MM-DD
 *   referral-publish verify --dir DIR --card CARD
 *
 * docs/PUBLISHING.md describes what is published and what never is.
 * Exit status: 0 ok, 1 verification failed, 2 usage or system error. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "tool.h"

/* --help, laid out as a manual page (make install turns it into referral-publish(1)). */
static const char usage[] =
    "NAME\n"
    "    referral-publish - publish de-identified data on documented violations by federal agents\n"
    "\n"
    "SYNOPSIS\n"
    "    referral-publish [run] --config FILE --out DIR --as-of YYYY-MM-DD\n"
    "    referral-publish verify --dir DIR --card CARD\n"
    "    referral-publish --help\n"
    "\n"
    "DESCRIPTION\n"
    "    A police source adapter keeps, for each referral it sends, the facts that the referral's\n"
    "    publication settings allow to be published, already generalised: month and district, federal\n"
    "    agencies, categories of alleged violation, injuries, EMS and deaths, the federal supervisor's\n"
    "    credential outcome, body-camera recordings preserved. It never keeps names, badge or RD numbers,\n"
    "    addresses, exact times or free text there. This tool turns them, with the State's Attorney's\n"
    "    answers, into a dataset, a summary with small counts suppressed, and a self-contained web page,\n"
    "    and signs a manifest of the files with the adapter's key. The same store and options give the\n"
    "    same bytes.\n"
    "\n"
    "COMMANDS\n"
    "    run (the default)\n"
    "        Writes incidents.csv, incidents.json, summary.json, index.html and MANIFEST.json into DIR\n"
    "        (created if missing), and prints how many rows were published, widened and withheld. Reads\n"
    "        the adapter's store without locking it, so it works while the adapter runs.\n"
    "    verify\n"
    "        Checks DIR against its MANIFEST.json and the publishing adapter's public card: every file\n"
    "        listed and no other, each file's SHA-256, and the signature.\n"
    "\n"
    "OPTIONS\n"
    "    --config FILE      the source adapter's config; its [publish] section may set threshold (counts\n"
    "                       under it are suppressed, default 5) and areas (\"004=Area 2; 005=Area 2\", the\n"
    "                       area a district is widened to; without it, \"citywide\")\n"
    "    --out DIR          run: where the files go\n"
    "    --as-of DATE       run: the \"data as of\" date printed on the page (YYYY-MM-DD)\n"
    "    --dir DIR          verify: the published files\n"
    "    --card CARD        verify: the publishing adapter's public card\n"
    "    --help             this text\n"
    "\n"
    "FILES\n"
    "    FILE                   the source adapter's config: [adapter] secret and data, and the\n"
    "                           optional [publish] section\n"
    "    DATA/adapter.db        the facts kept beside each referral sent, read without locking\n"
    "    DIR/incidents.csv, DIR/incidents.json, DIR/summary.json, DIR/index.html\n"
    "                           the rows, the suppressed counts, the page\n"
    "    DIR/MANIFEST.json      SHA-256 of each of them, signed with the adapter's key\n"
    "\n"
    "EXIT STATUS\n"
    "    0  done; verify: the files are the ones the card's holder signed\n"
    "    1  verify: a file changed, added or missing, or the signature does not hold\n"
    "    2  usage or system error (a bad option or setting, not a source adapter, an unreadable store)\n"
    "\n"
    "EXAMPLES\n"
    "    referral-publish --config /etc/referral/cpd-rms.conf --out /srv/www/ice-referrals \\\n"
    "        --as-of 2025-11-01\n"
    "    referral-publish verify --dir ice-referrals --card cpd-rms.card\n"
    "\n"
    "SEE ALSO\n"
    "    referral-adapter(1), referral-keys(1)\n";

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
        {"out", required_argument, NULL, 'o'},
        {"as-of", required_argument, NULL, 'a'},
        {"dir", required_argument, NULL, 'd'},
        {"card", required_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *out = NULL, *as_of = NULL, *dir = NULL, *card_path = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            xoption_once(&config, optarg, "--config");
            break;
        case 'o':
            xoption_once(&out, optarg, "--out");
            break;
        case 'a':
            xoption_once(&as_of, optarg, "--as-of");
            break;
        case 'd':
            xoption_once(&dir, optarg, "--dir");
            break;
        case 'k':
            xoption_once(&card_path, optarg, "--card");
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
    char err[1024];
    if (strcmp(command, "verify") == 0) {
        if (config != NULL || out != NULL || as_of != NULL)
            xdie(EXIT_USAGE, "verify takes --dir and --card only");
        xrequire(dir, "--dir");
        xrequire(card_path, "--card");
        card_t card;
        rb_err rc = card_read_file(&card, card_path);
        if (rc != RB_OK)
            xfail(rc, card_path);
        if ((rc = publish_verify(dir, &card, err, sizeof err)) != RB_OK)
            xdie(tool_exit_code(rc), "%s", err);
        printf("%s: every file is listed in MANIFEST.json, unchanged, and signed by %s (%s)\n", dir,
               card.name, card.agency);
        return 0;
    }
    if (strcmp(command, "run") != 0)
        xdie(EXIT_USAGE, "no command '%s' (see --help)", command);
    if (dir != NULL || card_path != NULL)
        xdie(EXIT_USAGE, "--dir and --card are for verify");
    xrequire(config, "--config");
    xrequire(out, "--out");
    xrequire(as_of, "--as-of");
    publish_report_t report;
    rb_err rc = adapter_publish(config, out, as_of, &report, err, sizeof err);
    if (rc != RB_OK)
        xdie(tool_exit_code(rc), "%s", err);
    printf("%s: %d rows published (%d widened to a quarter or an area, %d withheld) from %d referrals", out,
           report.rows, report.coarsened, report.withheld, report.referrals);
    if (report.unrecorded > 0)
        printf("; %d referrals queued before this version kept their facts are not included",
               report.unrecorded);
    printf("\n");
    return 0;
}
