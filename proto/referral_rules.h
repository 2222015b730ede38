/* referral_rules.h -- the validation rules every referral, supplement and withdrawal must meet.
 *
 * The schema says what a referral can hold; these rules say what it must hold for the State's Attorney
 * to act on it: the executive order's required facts (the supervisor's credential check and the
 * body-camera recording of it, EMS and aid when anyone was hurt, preserved recordings with their hashes),
 * well-formed identifiers and times, consistent cross-references, and bounded, well-formed text. Every
 * problem is reported, each with the path of its field in the proto3 JSON form
 * ("$.federalAgents[0].credentialCheck.result"), so that a rejected referral can be fixed in one pass.
 * Problem messages name fields and rules, never content: they travel back in ACKs and may be logged.
 *
 * What each kind must carry:
 *   - REFERRAL: revision 1, no references, no withdrawalReason, and the full content: incident,
 *     narrative, reporting officers, agents (or noAgentIdentifiedReason), approval and publication.
 *   - SUPPLEMENT: the same full content, because the receiver replaces the case details with the latest
 *     revision; plus revision >= 2 and references to the earlier revision of the same RD number.
 *   - WITHDRAWAL: only what identifies it (schemaVersion, agencyOri, rdNumber, revision >= 2,
 *     references), its withdrawalReason and the approval of the supervisor who decided it. A withdrawal
 *     may still carry the case content; whatever it carries is checked as in a referral.
 *
 * Every string, in any kind, must be valid UTF-8 and within its cap (REFERRAL_*_MAX below); fields other
 * than free text must be one line without control characters. Every list holds at most REFERRAL_MAX_ITEMS
 * entries; a longer one is reported and the other rules are not run, so that a hostile body cannot make
 * the cross-reference checks slow. */
#ifndef REFERRAL_RULES_H
#define REFERRAL_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.pb-c.h"
#include "rb_error.h"
#include "referral.pb-c.h"

#define REFERRAL_MAX_PROBLEMS  32
#define REFERRAL_NARRATIVE_MAX (64 * 1024) /* bytes of narrative */
#define REFERRAL_TEXT_MAX      4096        /* other free text: descriptions, notes, reasons, contact */
#define REFERRAL_LOCATOR_MAX   1024        /* an evidence storage locator (a URL can be long) */
#define REFERRAL_LINE_MAX      200         /* every other string: names, numbers, references, times */
#define REFERRAL_MAX_ITEMS     1000        /* entries in any one list */

typedef struct {
    char path[128];    /* e.g. "$.federalAgents[0].credentialCheck.recordedOn" */
    char message[192]; /* what is wrong, in plain words, naming no content */
} referral_problem_t;

typedef struct {
    size_t count;   /* problems in items */
    bool truncated; /* more problems were found than items holds */
    referral_problem_t items[REFERRAL_MAX_PROBLEMS];
} referral_problems_t;

/* Checks r (borrowed) as the body of an envelope of this kind (REFERRAL, SUPPLEMENT or WITHDRAWAL; any
 * other kind is itself a problem at "$") at Unix millisecond now_ms: an incident or approval more than ten
 * minutes in the future is refused. Fills *out, which it resets first, with the problems in the order of
 * the schema. RB_OK when there is no problem, RB_ERR_INVALID when there is any. Never logs. */
rb_err referral_validate(const Rb__Referral *r, Rb__Kind kind, int64_t now_ms, referral_problems_t *out);

/* Parses an RFC 3339 date-time with an offset or "Z" ("2025-10-04T21:40:00-05:00", optional fraction of
 * up to nine digits, kept to the millisecond) into Unix milliseconds. False, *unix_ms untouched, when
 * malformed or impossible (February 30, hour 24, an offset past 23:59, ...). */
bool referral_parse_time(const char *text, int64_t *unix_ms);

#endif
