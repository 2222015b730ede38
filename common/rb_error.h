/* rb_error.h -- the project's one error enum.
 *
 * Every function that can fail returns an rb_err; results go through out-parameters. There is one value
 * per failure that a peer, an operator or a test must tell apart, and rb_strerror() names each in words
 * fit for a log line or a command-line error. Programmer errors are asserts, never values here. */
#ifndef RB_ERROR_H
#define RB_ERROR_H

#include <stddef.h>

typedef enum {
    RB_OK = 0,
    RB_ERR_NOMEM,           /* out of memory */
    RB_ERR_IO,              /* a file or system call failed; errno says which */
    RB_ERR_USAGE,           /* bad argument to a function or tool */
    RB_ERR_MALFORMED,       /* bytes that do not parse: truncated, not protobuf, bad text */
    RB_ERR_BAD_VERSION,     /* a format version this build does not know */
    RB_ERR_TOO_BIG,         /* over a size limit */
    RB_ERR_UNKNOWN_SENDER,  /* no trusted card for the sender's name or key id */
    RB_ERR_KEY_EXPIRED,     /* the key was not valid at the time in question */
    RB_ERR_KEY_REVOKED,     /* the key was revoked */
    RB_ERR_NOT_ALLOWED,     /* the sender's role may not send this kind of message */
    RB_ERR_BAD_SIGNATURE,   /* the header signature does not verify */
    RB_ERR_HASH_MISMATCH,   /* the ciphertext is not the one the header names */
    RB_ERR_WRONG_RECIPIENT, /* the envelope is for someone else */
    RB_ERR_DECRYPT,         /* the ciphertext does not open with our key */
    RB_ERR_BAD_INNER_SIG,   /* the inner signature does not verify */
    RB_ERR_INNER_MISMATCH,  /* the signed inner payload disagrees with the header */
    RB_ERR_BAD_BODY,        /* the body is not a valid message of its kind */
    RB_ERR_INVALID,         /* content breaks a validation rule (a problem list says which) */
    RB_ERR_BAD_CARD,        /* a card that does not parse or whose self-signature fails */
    RB_ERR_KEY_MISMATCH,    /* a secret file whose keys do not match its card */
    RB_ERR_BAD_PASSPHRASE,  /* wrong passphrase, or a secret file altered */
    RB_ERR_INSECURE_FILE,   /* a secret file that group or others may read */
    RB_ERR_EXISTS,          /* refusing to overwrite an existing file */
    RB_ERR_CONFLICT,        /* two different things under one identity (key id, message id) */
    RB_ERR_BUSY,            /* held by another process for now (a lock, a database being written) */
    RB_ERR__COUNT
} rb_err;

/* A constant string naming the error; never NULL, also for values out of range. */
const char *rb_strerror(rb_err err);

/* Writes why it failed, printf-style, into the caller's err buffer of errlen bytes, and returns rc: for the
 * functions that explain a failure in words as well as with a value. */
rb_err rb_explain(char *err, size_t errlen, rb_err rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
