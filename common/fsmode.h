/* fsmode.h -- files and folders with the mode the project promises, whatever the umask.
 *
 * What the programs create that holds keys or case content is its owner's alone: folders 0700, files 0600
 * (docs/OPERATIONS.md, "Files and their modes"). open() and mkdir() take the umask away from the mode
 * asked, and SQLite asks 0644 for a new database, so these create with the mode asked and then set it
 * exactly. One found more open than it may be (left by an older version, or by a chmod) loses the extra
 * bits, logged as event=mode_tightened path= was= now=: tightened rather than refused, so that an upgrade
 * needs no step and a careless chmod does not stop a service. */
#ifndef FSMODE_H
#define FSMODE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

#include "rb_error.h"

/* Takes every permission bit outside keep from the file or folder open on fd (named path in messages and
 * the log). RB_ERR_IO, with err saying which chmod would do, when it cannot (another user's file). */
rb_err fsmode_restrict(int fd, const char *path, mode_t keep, char *err, size_t errlen);

/* Makes the folder path with exactly mode, or when it exists restricts it to keep (fsmode_restrict). A
 * symbolic link at path is followed: the paths given here are the operator's own settings. *now (may be
 * NULL) receives the folder's mode after. */
rb_err fsmode_dir(const char *path, mode_t mode, mode_t keep, mode_t *now, char *err, size_t errlen);

/* With create, makes path an empty file of exactly mode when nothing is there (never through a symbolic
 * link); a file that exists is restricted to keep (fsmode_restrict). Without create, nothing is made. */
rb_err fsmode_file(const char *path, bool create, mode_t mode, mode_t keep, char *err, size_t errlen);

#endif
