/* tool.h -- what the command-line tools share: fatal errors, options, passphrases, stdin and stdout.
 *
 * Functions prefixed x exit the process on failure (printing one line "tool: what went wrong" to stderr),
 * so they belong in command-line tools only; library code returns rb_err. Exit codes are the same in every
 * tool: 0 success, 1 a verification or policy failure (bad signature, invalid referral, wrong passphrase),
 * 2 a usage or system error. */
#ifndef TOOL_H
#define TOOL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdnoreturn.h>

#include "identity.h"
#include "rb_error.h"

/* 2 is a mistake that starting again cannot mend (usage, config, a database of another schema, an altered
 * ledger): the units do not restart on it. 3 is a daemon's failure that may pass (a port still held by the
 * process it replaces, the disk full, the database busy): the units restart on it. */
enum { EXIT_VERIFY = 1, EXIT_USAGE = 2, EXIT_RETRY = 3 };

/* Records the program name for messages and initialises the crypto module; exits 2 if it cannot. */
void tool_init(const char *argv0);
/* tool_init, then returns the command (argv[1]);
 * prints usage and exits 0 for --help, exits 2 when there is no command or the crypto module fails. */
const char *tool_start(int argc, char **argv, const char *usage);
noreturn void xdie(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Dies with the exit code the error class calls for: "tool: <context>: <rb_strerror>". */
noreturn void xfail(rb_err rc, const char *context);
/* The exit code for an error: 2 for system and usage errors, 1 for everything else. */
int tool_exit_code(rb_err rc);

/* Dies unless a required option was given. Inline so that static analysis sees value is not NULL after. */
static inline void xrequire(const char *value, const char *option)
{
    if (value == NULL)
        xdie(EXIT_USAGE, "%s is required (see --help)", option);
}

/* Stores an option's value, refusing a second occurrence of the same option. */
void xoption_once(const char **slot, const char *value, const char *option);

/* Applies --log-format text|json and --log-level debug|info|warn|error (NULL leaves the default: text,
 * info); dies naming the option when a value is none of those. */
void xlog_options(const char *format, const char *level);

/* A passphrase, in secret memory the caller frees with rbcrypto_secret_free. From the first line of
 * file when file is not NULL (the file must not be readable by group or others), else asked on the
 * terminal without echo, twice when confirm. Dies when it is empty or there is no terminal. */
char *xpassphrase(const char *file, const char *prompt, bool confirm, size_t *len);

/* Loads a secret file, asking for its passphrase (from pass_file or the terminal) only if it has one. */
identity_t *xload_identity(const char *path, const char *pass_file);

/* All of stdin, at most max bytes, into memory from rbcrypto_secret_alloc (it may be plaintext). */
uint8_t *xread_stdin(size_t max, size_t *len);
void xwrite_stdout(const void *data, size_t len);

/* The signals of a daemon (referral-broker run, referral-adapter run), before any thread is started:
 * SIGTERM and SIGINT set the flag returned (without SA_RESTART, so that a wait in zmq_poll ends at once);
 * SIGHUP is logged (event=hangup_ignored) and otherwise ignored: settings are read at start only, and logs
 * go to stderr, so there is nothing to reload or reopen. SIGPIPE and SIGXFSZ are ignored: a write to a
 * closed socket or past a file size limit fails with an error the caller handles. Dies if a thread cannot
 * be started. */
const volatile sig_atomic_t *xdaemon_signals(void);

/* Unix time now. */
int64_t tool_now_ms(void);

#endif
