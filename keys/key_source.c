/*
 * key_source.c - read secrets for keyslots: key files and passphrases.
 *
 * Layer: keys/, for the command line (keys.h key_source_*).  Secrets are
 * read straight into key_secret_alloc() memory (locked, guarded, wiped on
 * release), a byte at a time for passphrases so that nothing past the line
 * is consumed and no copy of the secret lands in a stdio buffer or on the
 * stack.  The terminal's echo is switched off while a passphrase is typed
 * and restored on every path out, also when a signal (^C, ^\, a hangup
 * or kill) ends the process meanwhile.  Nothing here logs.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

#include "keys.h"

#define KEY_PASSPHRASE_MAX_BYTES 4096 /* longest passphrase line */
#define KEY_CONFIRM_PROMPT "Repeat to confirm: "

/* Write all of s to fd.  0 or -errno. */
static int key_write_str(int fd, const char *s)
{
	size_t len = strlen(s);

	while (len > 0) {
		ssize_t n = write(fd, s, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		s += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Read fd to EOF into buf, at most cap bytes.  Returns the number of bytes
 * read or -errno.
 */
static ssize_t key_read_full(int fd, uint8_t *buf, size_t cap)
{
	size_t len = 0;

	while (len < cap) {
		ssize_t n = read(fd, buf + len, cap - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	return (ssize_t)len;
}

int key_source_read_file(const char *path, struct key_source *src)
{
	struct stat st;
	uint8_t *buf;
	size_t cap;
	ssize_t len;
	int fd;
	int ret;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out_close;
	}
	/*
	 * One byte more than may be used, to see a file that is too long.  A
	 * regular file of size 0 may still hold bytes (procfs, sysfs report
	 * 0): its size is not known, as for a pipe.
	 */
	cap = KEY_SECRET_MAX_BYTES + 1;
	if (S_ISREG(st.st_mode) && st.st_size > 0 &&
	    st.st_size < (off_t)KEY_SECRET_MAX_BYTES)
		cap = (size_t)st.st_size + 1;
	buf = key_secret_alloc(cap);
	if (!buf) {
		ret = -ENOMEM;
		goto out_close;
	}
	len = key_read_full(fd, buf, cap);
	if (len < 0) {
		ret = (int)len;
		goto out_free_buf;
	}
	if (len == 0 || (size_t)len > KEY_SECRET_MAX_BYTES) {
		ret = -EINVAL;
		goto out_free_buf;
	}
	if ((size_t)len == cap) { /* a regular file grew while we read it */
		ret = -EIO;
		goto out_free_buf;
	}
	memset(src, 0, sizeof(*src));
	src->kind = KEY_KIND_KEYFILE;
	src->secret = buf;
	src->secret_len = (size_t)len;
	buf = NULL; /* now src's */
	ret = 0;
out_free_buf:
	key_secret_free(buf); /* wipes; NULL is fine */
out_close:
	close(fd);
	return ret;
}

/*
 * Read one line from fd into buf (room for cap bytes plus the newline),
 * one byte at a time.  Returns its length without the newline; -EIO at
 * end of input before any byte; -EMSGSIZE if it is longer than cap.
 */
static int key_read_line(int fd, uint8_t *buf, size_t cap)
{
	size_t len = 0;

	for (;;) {
		ssize_t n = read(fd, buf + len, 1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return len == 0 ? -EIO : (int)len;
		if (buf[len] == '\n') {
			buf[len] = 0;
			return (int)len;
		}
		if (++len > cap)
			return -EMSGSIZE;
	}
}

/*
 * The terminal's settings while echo is off, for a signal that ends the
 * process meanwhile: its handler puts them back, then dies of the signal
 * as it would have (tcsetattr, signal and raise are async-signal-safe).
 */
static const int key_tty_sigs[] = { SIGINT, SIGQUIT, SIGTERM, SIGHUP };
#define KEY_TTY_NSIGS (sizeof(key_tty_sigs) / sizeof(key_tty_sigs[0]))
static struct termios key_tty_saved;
static volatile sig_atomic_t key_tty_fd = -1;

static void key_tty_signal(int sig)
{
	if (key_tty_fd >= 0)
		(void)tcsetattr(key_tty_fd, TCSAFLUSH, &key_tty_saved);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Prompt on the terminal tty and read a line with echo off. */
static int key_tty_read(int tty, const char *prompt, uint8_t *buf, size_t cap)
{
	struct sigaction act = { .sa_handler = key_tty_signal };
	struct sigaction old[KEY_TTY_NSIGS];
	struct termios quiet;
	int ret;

	if (tcgetattr(tty, &key_tty_saved) < 0)
		return -errno;
	quiet = key_tty_saved;
	quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
	sigemptyset(&act.sa_mask);
	key_tty_fd = tty;
	for (size_t i = 0; i < KEY_TTY_NSIGS; i++)
		(void)sigaction(key_tty_sigs[i], &act, &old[i]);
	if (tcsetattr(tty, TCSAFLUSH, &quiet) < 0) {
		ret = -errno;
		goto out_signals;
	}
	ret = prompt ? key_write_str(tty, prompt) : 0;
	if (ret < 0)
		goto out_restore;
	ret = key_read_line(tty, buf, cap);
	/* The newline the user typed was not echoed. */
	if (key_write_str(tty, "\n") < 0 && ret >= 0)
		ret = -EIO;
out_restore:
	if (tcsetattr(tty, TCSAFLUSH, &key_tty_saved) < 0 && ret >= 0)
		ret = -errno;
out_signals:
	for (size_t i = 0; i < KEY_TTY_NSIGS; i++)
		(void)sigaction(key_tty_sigs[i], &old[i], NULL);
	key_tty_fd = -1;
	return ret;
}

/*
 * Read one passphrase into fresh secret memory *out: from the terminal tty
 * when there is one (tty >= 0), else a line of stdin.  Its length or -errno.
 */
static int key_prompt_one(int tty, const char *prompt, uint8_t **out)
{
	uint8_t *buf;
	int ret;

	buf = key_secret_alloc(KEY_PASSPHRASE_MAX_BYTES + 1);
	if (!buf)
		return -ENOMEM;
	if (tty >= 0)
		ret = key_tty_read(tty, prompt, buf, KEY_PASSPHRASE_MAX_BYTES);
	else
		ret = key_read_line(STDIN_FILENO, buf,
				    KEY_PASSPHRASE_MAX_BYTES);
	if (ret == 0)
		ret = -EINVAL; /* empty passphrase */
	if (ret < 0)
		goto out_free_buf;
	*out = buf;
	return ret;

out_free_buf:
	key_secret_free(buf); /* wipes */
	return ret;
}

/* Ask again; 0 if the answer equals pass (len bytes), else -errno. */
static int key_prompt_confirm(int tty, const uint8_t *pass, int len)
{
	uint8_t *again;
	int ret;

	ret = key_prompt_one(tty, KEY_CONFIRM_PROMPT, &again);
	if (ret < 0)
		return ret;
	if (ret != len || sodium_memcmp(pass, again, (size_t)len) != 0)
		ret = -EINVAL;
	else
		ret = 0;
	key_secret_free(again); /* wipes */
	return ret;
}

int key_source_prompt(const char *prompt, int confirm, struct key_source *src)
{
	uint8_t *pass;
	int len;
	int tty;
	int ret;

	/* No controlling terminal (a script, a daemon): read stdin. */
	tty = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	ret = key_prompt_one(tty, prompt, &pass);
	if (ret < 0)
		goto out_close;
	len = ret;
	if (confirm) {
		ret = key_prompt_confirm(tty, pass, len);
		if (ret < 0)
			goto out_free_pass;
	}
	memset(src, 0, sizeof(*src));
	src->kind = KEY_KIND_PASSPHRASE;
	src->secret = pass;
	src->secret_len = (size_t)len;
	pass = NULL; /* now src's */
	ret = 0;
out_free_pass:
	key_secret_free(pass); /* wipes; NULL is fine */
out_close:
	if (tty >= 0)
		close(tty);
	return ret;
}

void key_source_release(struct key_source *src)
{
	/* The secret came from key_secret_alloc() (read_file or prompt). */
	key_secret_free((void *)src->secret);
	memset(src, 0, sizeof(*src));
}
