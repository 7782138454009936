/*
 * keys_source_test.c - reading secrets (keys/key_source.c): key files
 * (contents, empty, 1 MiB and one byte more, missing, unreadable, a pipe),
 * passphrases from stdin when there is no terminal (newline stripped, a
 * last line without newline, confirm match and mismatch, empty line, end of
 * input, an over-long line), and from a pseudo-terminal (prompt shown, echo
 * off while typing, terminal settings restored, confirm mismatch).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* posix_openpt and friends; the Makefile sets it */
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "keys/keys.h"
#include "test/lib/check.h"

static char dir[] = "/tmp/keys_source_test.XXXXXX";

/* Write len bytes of pattern to dir/name; return the path (static). */
static const char *make_file(const char *name, size_t len)
{
	static char path[256];
	uint8_t *buf = malloc(len + 1);
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0 && buf);
	for (size_t i = 0; buf && i < len; i++)
		buf[i] = (uint8_t)(i * 7 + 1);
	if (fd >= 0 && buf)
		CHECK_EQ(write(fd, buf, len), (ssize_t)len);
	if (fd >= 0)
		close(fd);
	free(buf);
	return path;
}

static void check_file(const char *path, size_t len)
{
	struct key_source src;
	int ok = 1;

	if (CHECK_OK(key_source_read_file(path, &src)) < 0)
		return;
	CHECK_EQ(src.kind, KEY_KIND_KEYFILE);
	CHECK_EQ(src.secret_len, len);
	for (size_t i = 0; i < len && ok; i++)
		ok = src.secret[i] == (uint8_t)(i * 7 + 1);
	CHECK(ok);
	key_source_release(&src);
	CHECK(src.secret == NULL && src.secret_len == 0);
}

static void test_read_file(void)
{
	struct key_source src;
	const char *path;
	char p[300];
	int fds[2];

	check_file(make_file("k64", 64), 64);
	check_file(make_file("k1", 1), 1);
	check_file(make_file("kmax", KEY_SECRET_MAX_BYTES),
		   KEY_SECRET_MAX_BYTES);
	path = make_file("kbig", KEY_SECRET_MAX_BYTES + 1);
	CHECK_EQ(key_source_read_file(path, &src), -EINVAL);
	path = make_file("kempty", 0);
	CHECK_EQ(key_source_read_file(path, &src), -EINVAL);
	snprintf(p, sizeof(p), "%s/missing", dir);
	CHECK_EQ(key_source_read_file(p, &src), -ENOENT);
	CHECK(key_source_read_file(dir, &src) < 0);

	path = make_file("kprivate", 16);
	CHECK_EQ(chmod(path, 0), 0);
	if (geteuid() != 0) /* root reads it anyway */
		CHECK_EQ(key_source_read_file(path, &src), -EACCES);

	/* Not a regular file: a pipe, through /dev/fd. */
	CHECK_EQ(pipe(fds), 0);
	CHECK_EQ(write(fds[1], "pipe key", 8), 8);
	close(fds[1]);
	snprintf(p, sizeof(p), "/dev/fd/%d", fds[0]);
	if (CHECK_OK(key_source_read_file(p, &src)) == 0) {
		CHECK_EQ(src.secret_len, 8);
		CHECK(memcmp(src.secret, "pipe key", 8) == 0);
		key_source_release(&src);
	}
	close(fds[0]);

	/* A regular file whose size reads 0 but that holds bytes (procfs):
	 * read as far as it goes, not refused as one that grew. */
	if (CHECK_OK(key_source_read_file("/proc/self/stat", &src)) == 0) {
		CHECK(src.secret_len > 0);
		key_source_release(&src);
	}
}

/*
 * In a child with no controlling terminal (setsid), feed `input` on stdin
 * and prompt; check the return value and, on success, the passphrase.
 */
static void stdin_case(const char *input, size_t input_len, int confirm,
		       int want_ret, const char *want)
{
	int fds[2], status;
	pid_t pid;

	CHECK_EQ(pipe(fds), 0);
	pid = fork();
	if (pid == 0) {
		struct key_source src;
		int ret;

		setsid();
		dup2(fds[0], STDIN_FILENO);
		close(fds[0]);
		close(fds[1]);
		ret = key_source_prompt("Passphrase: ", confirm, &src);
		CHECK_EQ(ret, want_ret);
		if (ret == 0) {
			CHECK_EQ(src.kind, KEY_KIND_PASSPHRASE);
			CHECK_EQ(src.secret_len, strlen(want));
			CHECK(memcmp(src.secret, want, strlen(want)) == 0);
			key_source_release(&src);
		}
		_exit(CHECK_DONE());
	}
	close(fds[0]);
	/* The pipe holds the whole input (well under its capacity). */
	CHECK_EQ(write(fds[1], input, input_len), (ssize_t)input_len);
	close(fds[1]);
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_prompt_stdin(void)
{
	static char longline[5000];

	stdin_case("hunter2\n", 8, 0, 0, "hunter2");
	stdin_case("hunter2\nrest", 12, 0, 0, "hunter2");
	stdin_case("no newline", 10, 0, 0, "no newline");
	stdin_case("two words \n", 11, 0, 0, "two words ");
	stdin_case("same\nsame\n", 10, 1, 0, "same");
	stdin_case("same\nsane\n", 10, 1, -EINVAL, NULL);
	stdin_case("same\nsame2\n", 11, 1, -EINVAL, NULL);
	stdin_case("same\n", 5, 1, -EIO, NULL);
	stdin_case("\n", 1, 0, -EINVAL, NULL);
	stdin_case("", 0, 0, -EIO, NULL);
	memset(longline, 'x', sizeof(longline) - 1);
	longline[sizeof(longline) - 1] = '\n';
	stdin_case(longline, sizeof(longline), 0, -EMSGSIZE, NULL);
}

/* Read from the pty master until `want` shows up; append to log. */
static int pty_expect(int master, const char *want, char *log, size_t cap)
{
	size_t len = strlen(log);

	while (!strstr(log, want)) {
		struct pollfd p = { .fd = master, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 10000) <= 0 || len + 1 >= cap)
			return -1;
		n = read(master, log + len, cap - len - 1);
		if (n <= 0)
			return -1;
		len += (size_t)n;
		log[len] = 0;
	}
	return 0;
}

/* Child side, on its controlling terminal fd: prompt. */
static void pty_child(int fd, int want_ret)
{
	struct termios before, after;
	struct key_source src;
	int ret;

	if (tcgetattr(fd, &before) < 0)
		_exit(2);
	CHECK(before.c_lflag & ECHO);
	ret = key_source_prompt("Passphrase: ", 1, &src);
	CHECK_EQ(ret, want_ret);
	if (ret == 0) {
		CHECK_EQ(src.secret_len, 9);
		CHECK(memcmp(src.secret, "s3cr3t pw", 9) == 0);
		key_source_release(&src);
	}
	CHECK_EQ(tcgetattr(fd, &after), 0);
	CHECK(after.c_lflag & ECHO);
	CHECK_EQ(after.c_lflag, before.c_lflag);
	_exit(CHECK_DONE());
}

/*
 * A new pseudo-terminal and a child whose controlling terminal it is:
 * in the parent the child's pid and *master; in the child 0 and *tty,
 * its side.  -1 after a note if this machine has no pseudo-terminal.
 */
static pid_t pty_fork(int *master, int *tty)
{
	const char *name;
	pid_t pid;

	*master = posix_openpt(O_RDWR | O_NOCTTY);
	if (*master < 0 || grantpt(*master) < 0 || unlockpt(*master) < 0 ||
	    !(name = ptsname(*master))) {
		printf("note: no pseudo-terminal, a terminal case skipped\n");
		if (*master >= 0)
			close(*master);
		return -1;
	}
	pid = fork();
	if (pid != 0)
		return pid;
	close(*master);
	setsid();
	*tty = open(name, O_RDWR); /* no O_NOCTTY: becomes the ctty */
	if (*tty < 0)
		_exit(2);
	return 0;
}

static void pty_case(const char *second, int want_ret)
{
	static char log[4096];
	int master, tty, status;
	pid_t pid = pty_fork(&master, &tty);

	if (pid < 0)
		return;
	if (pid == 0)
		pty_child(tty, want_ret);
	log[0] = 0;
	/* Type only after the prompt: echo is off by then. */
	CHECK_EQ(pty_expect(master, "Passphrase: ", log, sizeof(log)), 0);
	CHECK_EQ(write(master, "s3cr3t pw\n", 10), 10);
	CHECK_EQ(pty_expect(master, "Repeat to confirm: ", log, sizeof(log)),
		 0);
	CHECK_EQ(write(master, second, strlen(second)),
		 (ssize_t)strlen(second));
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(strstr(log, "s3cr3t") == NULL); /* never echoed */
	close(master);
}

/*
 * ^C at the prompt: the child dies of SIGINT, and the terminal has its
 * echo back (it stayed off before: the shell was left typing blind).
 */
static void pty_interrupt_case(void)
{
	static char log[4096];
	struct termios after;
	int master, slave, tty, status;
	pid_t pid = pty_fork(&master, &tty);

	if (pid < 0)
		return;
	if (pid == 0) {
		struct key_source src;

		if (key_source_prompt("Passphrase: ", 0, &src) == 0)
			key_source_release(&src);
		_exit(3); /* not reached: the ^C ends it */
	}
	log[0] = 0;
	CHECK_EQ(pty_expect(master, "Passphrase: ", log, sizeof(log)), 0);
	CHECK_EQ(write(master, "part\003", 5), 5);
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT);
	slave = open(ptsname(master), O_RDWR | O_NOCTTY);
	CHECK(slave >= 0);
	if (slave >= 0) {
		CHECK_EQ(tcgetattr(slave, &after), 0);
		CHECK(after.c_lflag & ECHO);
		close(slave);
	}
	close(master);
}

int main(void)
{
	char cmd[64];

	if (key_init() < 0)
		SKIP("libsodium cannot initialise");
	alarm(120); /* wall-clock limit: a hung prompt must not hang make */
	signal(SIGPIPE, SIG_IGN);
	if (!mkdtemp(dir))
		SKIP("cannot make a temporary directory");

	test_read_file();
	test_prompt_stdin();
	pty_case("s3cr3t pw\n", 0);
	pty_case("s3cr3t pv\n", -EINVAL);
	pty_interrupt_case();

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK_EQ(system(cmd), 0);
	return CHECK_DONE();
}
