/* Descriptors that signal their owner when they become readable (O_ASYNC), across a
 * checkpoint and resume: a pipe whose owner is the process, with F_SETSIG SIGRTMIN+5 (so
 * its siginfo names the descriptor); a socket whose owner is the process group, with
 * SIGIO; a pty slave whose owner is a second thread (F_OWNER_TID), with SIGRTMIN+6. Each
 * must keep its owner and signal, and signal when written to. Prints READY, waits for a
 * line, checks, prints SIGIO OK or what differs. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/syscall.h>

static volatile sig_atomic_t pipe_fd = -1, sock_io, tty_to = -1;

static void on_rt5(int s, siginfo_t *i, void *c) {
    (void)s;
    (void)c;
    pipe_fd = i->si_fd;
}
static void on_io(int s) {
    (void)s;
    sock_io++;
}
static void on_rt6(int s) {
    (void)s;
    tty_to = syscall(SYS_gettid);
}

static pid_t second_tid;
static void *second(void *a) {
    (void)a;
    second_tid = syscall(SYS_gettid);
    for (;;)
        pause();
    return NULL;
}

static int async(int fd, int type, pid_t who, int sig) {
    struct f_owner_ex o = {.type = type, .pid = who};
    return fcntl(fd, F_SETOWN_EX, &o) || (sig && fcntl(fd, F_SETSIG, sig)) ||
           fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC | O_NONBLOCK);
}

static int owner_is(int fd, int type, pid_t who, int sig, const char *what) {
    struct f_owner_ex o;
    fcntl(fd, F_GETOWN_EX, &o);
    int s = fcntl(fd, F_GETSIG), fl = fcntl(fd, F_GETFL);
    if (o.type != type || o.pid != who || s != sig || !(fl & O_ASYNC)) {
        printf("%s OWNER WRONG: type %d pid %d signal %d flags %#x\n", what, o.type, o.pid, s, fl);
        return 0;
    }
    return 1;
}

int main(void) {
    /* A group of its own (unless it leads its session, and so its group, already): the
     * socket's SIGIO goes to nobody else. */
    setpgid(0, 0);
    struct sigaction sa = {.sa_sigaction = on_rt5, .sa_flags = SA_SIGINFO | SA_RESTART};
    sigaction(SIGRTMIN + 5, &sa, NULL);
    signal(SIGIO, on_io);
    signal(SIGRTMIN + 6, on_rt6);
    pthread_t t;
    pthread_create(&t, NULL, second, NULL);
    while (!second_tid)
        usleep(1000);
    int p[2], s[2];
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (pipe(p) || socketpair(AF_UNIX, SOCK_STREAM, 0, s) || m < 0 || grantpt(m) || unlockpt(m))
        return 3;
    int slave = open(ptsname(m), O_RDWR | O_NOCTTY);
    if (slave < 0 || async(p[0], F_OWNER_PID, getpid(), SIGRTMIN + 5) ||
        async(s[0], F_OWNER_PGRP, getpgrp(), 0) ||
        async(slave, F_OWNER_TID, second_tid, SIGRTMIN + 6))
        return 3;
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    int ok = owner_is(p[0], F_OWNER_PID, getpid(), SIGRTMIN + 5, "PIPE") &
             owner_is(s[0], F_OWNER_PGRP, getpgrp(), 0, "SOCKET") &
             owner_is(slave, F_OWNER_TID, second_tid, SIGRTMIN + 6, "PTY");
    write(p[1], "x", 1);
    write(s[1], "x", 1);
    write(m, "x\n", 2);
    for (int i = 0; i < 200 && (pipe_fd < 0 || !sock_io || tty_to < 0); i++)
        usleep(10000);
    if (pipe_fd != p[0] || !sock_io || tty_to != second_tid) {
        printf("SIGNALS WRONG: pipe's named fd %d (not %d), socket's %d, pty's went to %d (not %d)\n",
               (int)pipe_fd, p[0], (int)sock_io, (int)tty_to, second_tid);
        ok = 0;
    }
    if (!ok)
        return 1;
    printf("SIGIO OK\n");
    return 0;
}
