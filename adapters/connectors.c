/* connectors.c -- the registry of connectors: one line per connector (see connector.h). */
#include "connector.h"

extern const connector_ops_t rms_files_connector;
extern const connector_ops_t rms_http_connector;
extern const connector_ops_t intake_files_connector;
extern const connector_ops_t intake_sqlite_connector;

const connector_ops_t *const connectors[] = {
    &rms_files_connector, &rms_http_connector, &intake_files_connector, &intake_sqlite_connector, NULL,
};
