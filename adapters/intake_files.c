/* intake_files.c -- sink connector: each referral as pretty JSON in a folder that a case-management
 * system imports from. Written atomically (temporary file, fsync, rename) as OUT/MESSAGE_ID.json, so the
 * importer never sees half a file and a repeated filing rewrites the same file (a link planted under that
 * name is replaced, never followed). Who sent it (the card its signatures verified with) goes to
 * OUT/MESSAGE_ID.filing first, so that it is there whenever the referral is; an importer that reads *.json
 * never mistakes it for a referral. The intake reference is the message id. Each file is 0600, or 0640 when
 * the operator shares OUT with the importer's group, whatever the umask. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "adapter.h"
#include "fsmode.h"
#include "keyfile.h"
#include "pbjson.h"
#include "wire.h"

/* Its [intake-files] section (the row below). */
typedef struct {
    char out[2048];
} intake_files_conf_t;

struct connector {
    char out[2048];
    mode_t file_mode; /* of each referral written: the adapter's own, or shared with OUT's group */
};

static const setting_t settings[] = {
    SETTING_TEXT_ROW("intake-files", "out", intake_files_conf_t, out, 1, NULL, NULL,
                     "the folder a case-management system imports from"),
    {0},
};

static rb_err files_open(connector_t **out, adapter_t *a, const void *conf, char *err, size_t errlen)
{
    (void)a;
    const char *dir = ((const intake_files_conf_t *)conf)->out;
    mode_t mode;
    /* Owner and group (set by the operator, who may share OUT with the importer), never others. */
    rb_err rc = fsmode_dir(dir, 0700, 02770, &mode, err, errlen);
    if (rc != RB_OK)
        return rc;
    connector_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return RB_ERR_NOMEM;
    snprintf(c->out, sizeof c->out, "%s", dir);
    c->file_mode = 0600 | (mode & 0040);
    *out = c;
    return RB_OK;
}

static rb_err files_file(connector_t *c, const msg_id_t *id, Rb__Kind kind, const Rb__Referral *r,
                         const card_t *sender, char *intake_reference, size_t cap, char *err, size_t errlen)
{
    char hex[33], path[4200], key_id[2 * RB_KEY_ID_BYTES + 1], filing[512];
    wire_id_hex(id->bytes, hex);
    card_key_id_hex(sender->key_id, key_id);
    const ProtobufCEnumValue *kind_name =
        protobuf_c_enum_descriptor_get_value(&rb__kind__descriptor, (int)kind);
    /* Names, ORIs and kinds are of fixed character sets: nothing here needs escaping. */
    int n =
        snprintf(filing, sizeof filing,
                 "{\n  \"filingFormat\": 1,\n  \"messageId\": \"%s\",\n  \"kind\": \"%s\",\n"
                 "  \"sender\": \"%s\",\n  \"senderAgency\": \"%s\",\n  \"senderKeyId\": \"%s\"\n}\n",
                 hex, kind_name ? kind_name->name : "KIND_UNSPECIFIED", sender->name, sender->agency, key_id);
    snprintf(path, sizeof path, "%s/%s.filing", c->out, hex);
    rb_err rc = keyfile_write(path, filing, (size_t)n, c->file_mode, true);
    char *json = NULL;
    if (rc == RB_OK)
        snprintf(path, sizeof path, "%s/%s.json", c->out, hex);
    if (rc == RB_OK && (rc = pbjson_format(&r->base, PBJSON_PRETTY, &json)) == RB_OK) {
        rc = keyfile_write(path, json, strlen(json), c->file_mode, true);
        pbjson_free(json);
    }
    if (rc != RB_OK) {
        snprintf(err, errlen, "%s: %s", path, rc == RB_ERR_IO ? strerror(errno) : rb_strerror(rc));
        return rc;
    }
    snprintf(intake_reference, cap, "%s", hex);
    return RB_OK;
}

static void files_close(connector_t **c)
{
    free(*c);
    *c = NULL;
}

const connector_ops_t intake_files_connector = {
    .name = "intake-files",
    .role = CARD_ROLE_SINK,
    .settings = settings,
    .settings_size = sizeof(intake_files_conf_t),
    .open = files_open,
    .file = files_file,
    .close = files_close,
};
