/* Signals queued and blocked across a checkpoint and resume: every copy comes back, in its
 * order, with its siginfo (code, sender, value). Queued for the process: SIGUSR1 by kill,
 * SIGUSR2 by sigqueue from a child since reaped, SIGRTMIN+1 three times by sigqueue with
 * values 11, 22, 33. Queued for the main thread: SIGRTMIN+3 twice by tgkill. Queued for
 * a second thread: SIGRTMIN+2 by pthread_sigqueue with value 44. And the child's
 * SIGCHLD, which the kernel sent. Prints READY, waits for
 * a line, takes every signal with sigwaitinfo, prints SIGNALS OK or what differs. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static int go[2];
static int bad;

static void expect(const sigset_t *set, int sig, int code, pid_t from, int value, const char *what) {
    siginfo_t i;
    memset(&i, 0, sizeof i);
    struct timespec none = {0, 0};
    int got = sigtimedwait(set, &i, &none);
    if (got != sig || i.si_code != code || i.si_pid != from || i.si_uid != getuid() ||
        ((code == SI_QUEUE || sig == SIGCHLD) && i.si_value.sival_int != value)) {
        printf("%s WRONG: signal %d code %d from %d uid %d value %d\n", what, got, i.si_code,
               i.si_pid, i.si_uid, i.si_value.sival_int);
        bad = 1;
    }
}

static void *second(void *arg) {
    (void)arg;
    char c;
    if (read(go[0], &c, 1) != 1)
        return (void *)1;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN + 2);
    expect(&set, SIGRTMIN + 2, SI_QUEUE, getpid(), 44, "THREAD SIGRTMIN+2");
    return NULL;
}

int main(void) {
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    if (pipe(go))
        return 3;
    pthread_t t;
    if (pthread_create(&t, NULL, second, NULL))
        return 3;
    pid_t me = getpid();
    /* The code tgkill gives (SI_TKILL, or SI_USER on some kernels), seen here once. */
    sigset_t probe;
    sigemptyset(&probe);
    sigaddset(&probe, SIGRTMIN + 4);
    siginfo_t seen;
    syscall(SYS_tgkill, me, syscall(SYS_gettid), SIGRTMIN + 4);
    if (sigwaitinfo(&probe, &seen) != SIGRTMIN + 4)
        return 3;
    int tkill = seen.si_code;
    kill(me, SIGUSR1);
    pid_t kid = fork();
    if (kid == 0) {
        union sigval v = {.sival_int = 55};
        sigqueue(getppid(), SIGUSR2, v);
        _exit(7);
    }
    waitpid(kid, NULL, 0);
    for (int n = 11; n <= 33; n += 11) {
        union sigval v = {.sival_int = n};
        sigqueue(me, SIGRTMIN + 1, v);
    }
    syscall(SYS_tgkill, me, syscall(SYS_gettid), SIGRTMIN + 3);
    syscall(SYS_tgkill, me, syscall(SYS_gettid), SIGRTMIN + 3);
    union sigval v = {.sival_int = 44};
    pthread_sigqueue(t, SIGRTMIN + 2, v);
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGRTMIN + 1);
    sigaddset(&set, SIGRTMIN + 3);
    /* The thread's own queue first, then the process's, lowest number first. */
    expect(&set, SIGRTMIN + 3, tkill, me, 0, "FIRST SIGRTMIN+3");
    expect(&set, SIGRTMIN + 3, tkill, me, 0, "SECOND SIGRTMIN+3");
    expect(&set, SIGUSR1, SI_USER, me, 0, "SIGUSR1");
    expect(&set, SIGUSR2, SI_QUEUE, kid, 55, "SIGUSR2");
    /* (its exit status where a queued signal's value is) */
    expect(&set, SIGCHLD, CLD_EXITED, kid, 7, "SIGCHLD");
    expect(&set, SIGRTMIN + 1, SI_QUEUE, me, 11, "FIRST SIGRTMIN+1");
    expect(&set, SIGRTMIN + 1, SI_QUEUE, me, 22, "SECOND SIGRTMIN+1");
    expect(&set, SIGRTMIN + 1, SI_QUEUE, me, 33, "THIRD SIGRTMIN+1");
    if (write(go[1], "g", 1) != 1)
        return 3;
    void *r;
    pthread_join(t, &r);
    sigset_t left;
    sigpending(&left);
    /* (SIGWINCH: the resume's, sent so that programs redraw) */
    for (int s = 1; s < 65; s++)
        if (s != SIGWINCH && sigismember(&left, s)) {
            printf("LEFT PENDING: %d\n", s);
            bad = 1;
        }
    if (r || bad)
        return 1;
    printf("SIGNALS OK\n");
    return 0;
}
