/* rb_error.c -- words for each rb_err. */
#include "rb_error.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const messages[RB_ERR__COUNT] = {
    [RB_OK] = "ok",
    [RB_ERR_NOMEM] = "out of memory",
    [RB_ERR_IO] = "input/output error",
    [RB_ERR_USAGE] = "invalid argument",
    [RB_ERR_MALFORMED] = "malformed input (truncated or not in the expected format)",
    [RB_ERR_BAD_VERSION] = "unsupported format version",
    [RB_ERR_TOO_BIG] = "over the size limit",
    [RB_ERR_UNKNOWN_SENDER] = "unknown sender (no trusted card for its name and key id)",
    [RB_ERR_KEY_EXPIRED] = "key expired or not yet valid",
    [RB_ERR_KEY_REVOKED] = "key revoked",
    [RB_ERR_NOT_ALLOWED] = "the sender's role may not send this kind of message",
    [RB_ERR_BAD_SIGNATURE] = "bad header signature",
    [RB_ERR_HASH_MISMATCH] = "ciphertext does not match the hash in the header",
    [RB_ERR_WRONG_RECIPIENT] = "addressed to another recipient",
    [RB_ERR_DECRYPT] = "decryption failed",
    [RB_ERR_BAD_INNER_SIG] = "bad inner signature",
    [RB_ERR_INNER_MISMATCH] = "signed inner payload does not match the header",
    [RB_ERR_BAD_BODY] = "body is not a valid message of its kind",
    [RB_ERR_INVALID] = "content fails validation",
    [RB_ERR_BAD_CARD] = "bad card (malformed or self-signature invalid)",
    [RB_ERR_KEY_MISMATCH] = "secret keys do not match the card inside the secret file",
    [RB_ERR_BAD_PASSPHRASE] = "wrong passphrase or damaged secret file",
    [RB_ERR_INSECURE_FILE] = "secret file is readable by group or others (chmod 600 it)",
    [RB_ERR_EXISTS] = "file exists (use --force to replace it)",
    [RB_ERR_CONFLICT] = "conflicting duplicate",
    [RB_ERR_BUSY] = "in use by another process for now",
};

const char *rb_strerror(rb_err err)
{
    if ((unsigned)err >= RB_ERR__COUNT || !messages[err])
        return "unknown error";
    return messages[err];
}

rb_err rb_explain(char *err, size_t errlen, rb_err rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}
