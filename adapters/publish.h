/* publish.h -- the public transparency data of documented violations (docs/PUBLISHING.md).
 *
 * When a source queues a referral it keeps, beside the sealed envelope, the referral's de-identified
 * facts: for each group of fields the publication class the referral gives it, and only for a group that
 * may be published, its generalised values (month and district, federal agencies, injuries, credential
 * outcome, recordings preserved, categories). No name, number, address, exact time or free text is ever
 * kept there. referral-publish turns those facts and the recipient's answers into a dataset, a
 * summary with small counts suppressed, a self-contained page, and a manifest signed with the source's
 * key. The same store and options always give the same bytes. */
#ifndef PUBLISH_H
#define PUBLISH_H

#include <stddef.h>

#include "astore.h"
#include "card.h"
#include "identity.h"
#include "rb_error.h"
#include "referral.pb-c.h"

/* The facts of r that publication may use, as compact JSON with sorted keys (malloc'd; NULL when out of
 * memory). */
char *publish_facts(const Rb__Referral *r);

typedef struct {
    int threshold;     /* counts under it are suppressed; rows shared by fewer referrals are coarsened */
    const char *as_of; /* the "data as of" date the caller gives, YYYY-MM-DD */
    const char *areas; /* "DISTRICT=AREA;...", the places a district coarsens to; NULL: "citywide" */
} publish_options_t;

typedef struct {
    int referrals;  /* cases (agency, RD number) with facts */
    int unrecorded; /* cases queued before facts were kept: left out */
    int rows;       /* rows published */
    int coarsened;  /* of them, published with a quarter or an area instead of a month or a district */
    int withheld;   /* rows the re-identification check withheld */
} publish_report_t;

/* Writes incidents.csv, incidents.json, summary.json, index.html and MANIFEST.json (signed with signer's
 * key) into dir, creating it if needed and replacing those files. RB_ERR_USAGE names a bad option. */
rb_err publish_write(astore_t *store, const identity_t *signer, const publish_options_t *o, const char *dir,
                     publish_report_t *report, char *err, size_t errlen);

/* Checks dir against its MANIFEST.json and the publisher's card: every file listed and no other, each
 * file's SHA-256, and the signature. RB_ERR_BAD_SIGNATURE (or RB_ERR_MALFORMED, RB_ERR_IO) with err
 * naming what does not hold. */
rb_err publish_verify(const char *dir, const card_t *card, char *err, size_t errlen);

#endif
