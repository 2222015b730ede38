/* secret_fuzz.c -- libFuzzer target for reading secret key files (keys/identity.c, keys/keyfile.c).
 *
 * The input is written as a secret file and loaded with identity_load, as every tool and service does.
 * A file loads only in the one form identity_save writes, so a file that loads in clear must save back to
 * exactly its own bytes, and its keys are the card's (identity_load checks; the target checks by sealing
 * to the card and opening with the key). When the first byte is odd the file is made readable by its
 * group, and then it must never load. An encrypted file is loaded without a passphrase (so the KDF, at
 * least 64 MiB of Argon2id, is never run here) and must be refused as needing one, or as malformed.
 * Files live in a private directory under /dev/shm (or $TMPDIR) that the target removes at exit. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "identity.h"
#include "keyfile.h"
#include "rbcrypto.h"

static char dir[256], path[300], again[300];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void cleanup(void)
{
    unlink(path);
    unlink(again);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm"
                       : getenv("TMPDIR")            ? getenv("TMPDIR")
                                                     : "/tmp";
    snprintf(dir, sizeof dir, "%s/secret_fuzz.XXXXXX", base);
    if (rbcrypto_init() != RB_OK || mkdtemp(dir) == NULL)
        abort();
    snprintf(path, sizeof path, "%s/in.secret", dir);
    snprintf(again, sizeof again, "%s/again.secret", dir);
    atexit(cleanup);
    return 0;
}

/* The identity's keys are its card's: what is sealed to the card opens with the key. */
static void check_keys(const identity_t *id)
{
    static const uint8_t msg[] = "canary";
    uint8_t box[sizeof msg + RB_SEAL_OVERHEAD], opened[sizeof msg];
    if (rbcrypto_seal(msg, sizeof msg, identity_card(id)->box_pk, box) != RB_OK ||
        rbcrypto_seal_open(box, sizeof box, identity_card(id)->box_pk, identity_box_sk(id), opened) !=
            RB_OK ||
        memcmp(opened, msg, sizeof msg) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    bool group_readable = data[0] & 1;
    unlink(path);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data + 1, 1, size - 1, f) != size - 1 || fclose(f) != 0 ||
        chmod(path, group_readable ? 0640 : 0600) != 0)
        abort();
    bool encrypted = false;
    rb_err enc_rc = identity_file_encrypted(path, &encrypted);
    identity_t *id;
    rb_err rc = identity_load(&id, path, NULL, 0);
    if (group_readable && (rc != RB_ERR_INSECURE_FILE || enc_rc != RB_ERR_INSECURE_FILE))
        abort();
    if (rc == RB_OK) {
        if (enc_rc != RB_OK || encrypted)
            abort(); /* loaded without a passphrase, so it is a clear file */
        check_keys(id);
        unlink(again);
        char *text = malloc(KEYFILE_MAX_BYTES);
        size_t len;
        struct stat st;
        if (text == NULL || identity_save(id, again, NULL, 0, 0, 0, false) != RB_OK ||
            keyfile_read(again, text, KEYFILE_MAX_BYTES, &len, &st) != RB_OK || len != size - 1 ||
            memcmp(text, data + 1, len) != 0)
            abort(); /* another spelling of the same secret file loaded */
        free(text);
        identity_free(&id);
    } else if (enc_rc == RB_OK && encrypted && rc != RB_ERR_BAD_PASSPHRASE && rc != RB_ERR_MALFORMED) {
        abort();
    }
    return 0;
}
