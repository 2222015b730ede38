/* fsmode.c -- files and folders with exactly the mode asked, whatever the umask (see fsmode.h). */
#include "fsmode.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

rb_err fsmode_restrict(int fd, const char *path, mode_t keep, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return RB_ERR_IO;
    }
    mode_t was = st.st_mode & 07777, now = was & keep;
    if (now == was)
        return RB_OK;
    if (fchmod(fd, now) != 0) {
        snprintf(
            err, errlen,
            "%s: mode %04o is more open than it may be, and cannot be changed here (%s): run chmod %04o %s",
            path, (unsigned)was, strerror(errno), (unsigned)now, path);
        return RB_ERR_IO;
    }
    log_warn("mode_tightened", "path=%s was=%04o now=%04o", path, (unsigned)was, (unsigned)now);
    return RB_OK;
}

rb_err fsmode_dir(const char *path, mode_t mode, mode_t keep, mode_t *now, char *err, size_t errlen)
{
    bool made = mkdir(path, mode & 0777) == 0;
    if (!made && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return RB_ERR_IO;
    }
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, errno == ENOTDIR ? "not a folder" : strerror(errno));
        return RB_ERR_IO;
    }
    rb_err rc = RB_OK;
    struct stat st;
    if (made && fchmod(fd, mode) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = RB_ERR_IO;
    } else if (!made) {
        rc = fsmode_restrict(fd, path, keep, err, errlen);
    }
    if (rc == RB_OK && now != NULL && fstat(fd, &st) == 0)
        *now = st.st_mode & 07777;
    close(fd);
    return rc;
}

rb_err fsmode_file(const char *path, bool create, mode_t mode, mode_t keep, char *err, size_t errlen)
{
    int fd = create ? open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 0777) : -1;
    bool made = fd >= 0;
    if (!made && create && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return RB_ERR_IO;
    }
    /* O_NONBLOCK: whatever is there, opening it must not wait (a FIFO would, for a writer). */
    if (!made && (fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)) < 0) {
        if (errno == ENOENT && !create)
            return RB_OK;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return RB_ERR_IO;
    }
    rb_err rc = RB_OK;
    if (made && fchmod(fd, mode) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = RB_ERR_IO;
    } else if (!made) {
        rc = fsmode_restrict(fd, path, keep, err, errlen);
    }
    close(fd);
    return rc;
}
