/* tool.c -- shared command-line plumbing (see tool.h). Only the tools link against these x-functions. */
#include "tool.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "rbcrypto.h"

#define PASSPHRASE_MAX 1024

static const char *program_name = "referral";

void tool_init(const char *argv0)
{
    const char *slash = strrchr(argv0, '/');
    program_name = slash ? slash + 1 : argv0;
    if (rbcrypto_init() != RB_OK)
        xdie(EXIT_USAGE, "cannot initialise the crypto library");
}

const char *tool_start(int argc, char **argv, const char *usage)
{
    tool_init(argv[0]);
    if (argc < 2)
        xdie(EXIT_USAGE, "a command is required (see --help)");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        fputs(usage, stdout);
        exit(0);
    }
    return argv[1];
}

noreturn void xdie(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", program_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

int tool_exit_code(rb_err rc)
{
    return rc == RB_ERR_IO || rc == RB_ERR_USAGE || rc == RB_ERR_NOMEM || rc == RB_ERR_EXISTS ||
                   rc == RB_ERR_BUSY
               ? EXIT_USAGE
               : EXIT_VERIFY;
}

noreturn void xfail(rb_err rc, const char *context)
{
    if (rc == RB_ERR_IO)
        xdie(EXIT_USAGE, "%s: %s", context, strerror(errno));
    xdie(tool_exit_code(rc), "%s: %s", context, rb_strerror(rc));
}

void xoption_once(const char **slot, const char *value, const char *option)
{
    if (*slot != NULL)
        xdie(EXIT_USAGE, "option %s given twice", option);
    *slot = value;
}

void xlog_options(const char *format, const char *level)
{
    log_format f;
    log_level l;
    if (format != NULL && !log_format_named(format, &f))
        xdie(EXIT_USAGE, "--log-format must be text or json, not '%s'", format);
    if (level != NULL && !log_level_named(level, &l))
        xdie(EXIT_USAGE, "--log-level must be debug, info, warn or error, not '%s'", level);
    if (format != NULL)
        log_set_format(f);
    if (level != NULL)
        log_set_level(l);
}

static volatile sig_atomic_t stopping;

static void on_stop(int sig)
{
    (void)sig;
    stopping = 1;
}

/* SIGHUP is blocked in every thread and taken here, where logging is safe (a signal handler may not). */
static void *take_hangups(void *arg)
{
    const sigset_t *hup = arg;
    for (;;) {
        int sig;
        if (sigwait(hup, &sig) == 0)
            log_warn("hangup_ignored", "detail=\"%s\"",
                     "SIGHUP reloads nothing: settings are read at start (systemctl restart to apply a "
                     "changed config)");
    }
    return NULL;
}

const volatile sig_atomic_t *xdaemon_signals(void)
{
    struct sigaction sa = {.sa_handler = on_stop};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);
    static sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    pthread_t t;
    if (pthread_sigmask(SIG_BLOCK, &hup, NULL) != 0 || pthread_create(&t, NULL, take_hangups, &hup) != 0 ||
        pthread_detach(t) != 0)
        xdie(EXIT_USAGE, "cannot start the signal thread");
    return &stopping;
}

/* Reads one line (without its newline) from fd into buf (cap bytes); the length, or -1. */
static ssize_t read_line(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0 || c == '\n')
            break;
        if (n + 1 >= cap)
            return -1;
        buf[n++] = c;
    }
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    return (ssize_t)n;
}

static ssize_t ask_tty(const char *prompt, char *buf, size_t cap)
{
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        xdie(EXIT_USAGE, "no terminal to ask for the passphrase on: use --passphrase-file");
    struct termios old, quiet;
    bool restore = tcgetattr(fd, &old) == 0;
    if (restore) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
        quiet.c_lflag |= ICANON;
        tcsetattr(fd, TCSAFLUSH, &quiet);
    }
    if (write(fd, prompt, strlen(prompt)) < 0) {
        /* the question still gets its answer */
    }
    ssize_t n = read_line(fd, buf, cap);
    if (restore)
        tcsetattr(fd, TCSAFLUSH, &old);
    if (write(fd, "\n", 1) < 0) {
        /* cosmetic only */
    }
    close(fd);
    return n;
}

char *xpassphrase(const char *file, const char *prompt, bool confirm, size_t *len)
{
    char *pass = rbcrypto_secret_alloc(PASSPHRASE_MAX);
    if (pass == NULL)
        xdie(EXIT_USAGE, "out of memory");
    ssize_t n;
    if (file != NULL) {
        int fd = open(file, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0)
            xdie(EXIT_USAGE, "%s: %s", file, strerror(errno));
        if ((st.st_mode & 077) != 0)
            xdie(EXIT_VERIFY, "%s: passphrase file is readable by group or others (chmod 600 it)", file);
        n = read_line(fd, pass, PASSPHRASE_MAX);
        close(fd);
    } else {
        n = ask_tty(prompt, pass, PASSPHRASE_MAX);
        if (n > 0 && confirm) {
            char *again = rbcrypto_secret_alloc(PASSPHRASE_MAX);
            if (again == NULL)
                xdie(EXIT_USAGE, "out of memory");
            ssize_t m = ask_tty("Repeat passphrase: ", again, PASSPHRASE_MAX);
            bool same = m == n && memcmp(again, pass, (size_t)n) == 0;
            rbcrypto_secret_free(again);
            if (!same)
                xdie(EXIT_USAGE, "the passphrases differ");
        }
    }
    if (n <= 0)
        xdie(EXIT_USAGE, "%s: empty or unreadable passphrase (at most %d bytes)", file ? file : "terminal",
             PASSPHRASE_MAX - 1);
    *len = (size_t)n;
    return pass;
}

identity_t *xload_identity(const char *path, const char *pass_file)
{
    bool encrypted;
    rb_err rc = identity_file_encrypted(path, &encrypted);
    if (rc != RB_OK)
        xfail(rc, path);
    char *pass = NULL;
    size_t pass_len = 0;
    if (encrypted)
        pass = xpassphrase(pass_file, "Passphrase: ", false, &pass_len);
    identity_t *id;
    rc = identity_load(&id, path, pass, pass_len);
    rbcrypto_secret_free(pass);
    if (rc != RB_OK)
        xfail(rc, path);
    return id;
}

uint8_t *xread_stdin(size_t max, size_t *len)
{
    uint8_t *buf = rbcrypto_secret_alloc(max + 1);
    if (buf == NULL)
        xdie(EXIT_USAGE, "out of memory");
    size_t n = 0;
    for (;;) {
        ssize_t r = read(STDIN_FILENO, buf + n, max + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            xdie(EXIT_USAGE, "reading standard input: %s", strerror(errno));
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > max)
            xdie(EXIT_VERIFY, "standard input is over the limit of %zu bytes", max);
    }
    *len = n;
    return buf;
}

void xwrite_stdout(const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t w = write(STDOUT_FILENO, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            xdie(EXIT_USAGE, "writing standard output: %s", strerror(errno));
        p += w;
        len -= (size_t)w;
    }
}

int64_t tool_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
