/* referral_rules.h -- the validation rules every referral, supplement and withdrawal must meet.
 *
 * The schema says what a referral can hold; these rules say what it must hold for the State's Attorney
 * to act on it: the executive order's required facts (the supervisor's credential check and the
 * body-camera recording of it, EMS and aid when anyone was hurt, preserved recordings with their hashes),
 * well-formed identifiers and times, and consistent cross-references. Every problem is reported, each with
 * the path of its field in the JSON form, so that a rejected referral can be fixed in one pass. Problem
 * messages name fields and rules, never content: they travel back in ACKs and may be logged. */
#ifndef REFERRAL_RULES_H
#define REFERRAL_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.pb-c.h"
#include "rb_error.h"
#include "referral.pb-c.h"

#define REFERRAL_MAX_PROBLEMS  32
#define REFERRAL_NARRATIVE_MAX (64 * 1024)

typedef struct {
    char path[128];    /* e.g. "$.federalAgents[0].credentialCheck.recordedOn" */
    char message[192]; /* what is wrong, in plain words */
} referral_problem_t;

typedef struct {
    size_t count;   /* problems in items */
    bool truncated; /* more problems were found than items holds */
    referral_problem_t items[REFERRAL_MAX_PROBLEMS];
} referral_problems_t;

/* Checks r as the body of an envelope of this kind (REFERRAL, SUPPLEMENT or WITHDRAWAL) at Unix
 * millisecond now_ms (incidents more than ten minutes in the future are refused). Fills *out, which it
 * resets first. RB_OK when there is no problem, RB_ERR_INVALID when there is any.
 *
 * A withdrawal needs only what identifies it (agency, RD number, revision, references), its reason and the
 * approving supervisor; whatever else it carries is checked as in a referral. */
rb_err referral_validate(const Rb__Referral *r, Rb__Kind kind, int64_t now_ms, referral_problems_t *out);

/* Parses an RFC 3339 date-time with an offset or "Z" ("2025-10-04T21:40:00-05:00", optional fraction)
 * into Unix milliseconds. False when malformed or impossible (February 30, hour 24, ...). */
bool referral_parse_time(const char *text, int64_t *unix_ms);

#endif
