/* A program holding one of each resource kind the round trip must carry: 8 threads that
 * count, a pipe to a child process with 60 KB queued in it, memory shared with that child
 * (MAP_SHARED | MAP_ANONYMOUS), a periodic timerfd, an eventfd with a count, an epoll set
 * watching both, a signalfd, a directory, /dev/urandom, and a file read at an offset. It prints READY,
 * waits for a line on stdin (the test checkpoints and resumes it meanwhile), then checks
 * that every resource goes on from where it was and prints ALL OK or what failed. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <signal.h>
#include <dirent.h>

#define QUEUED (60 * 1024)
static atomic_long counters[8];

static void *count(void *arg) {
    long i = (long)arg;
    for (;;) {
        atomic_fetch_add(&counters[i], 1);
        usleep(2000);
    }
    return NULL;
}

static int fail(const char *what) {
    printf("FAIL: %s\n", what);
    fflush(stdout);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int data[2], go[2];
    if (pipe(data) || pipe(go)) return fail("pipe");
    volatile long *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) return fail("mmap");
    pid_t child = fork();
    if (child == 0) {
        close(data[1]);
        close(go[1]);
        char c;
        if (read(go[0], &c, 1) != 1) _exit(3);
        static unsigned char buf[QUEUED];
        size_t got = 0;
        while (got < QUEUED) {
            ssize_t n = read(data[0], buf + got, QUEUED - got);
            if (n <= 0) _exit(4);
            got += n;
        }
        for (size_t i = 0; i < QUEUED; i++)
            if (buf[i] != (unsigned char)(i * 7)) _exit(5);
        /* Written by the parent before the checkpoint; answered through the same page. */
        if (shared[0] != 0x5eed) _exit(6);
        shared[1] = 0xc0de;
        _exit(0);
    }
    close(data[0]);
    close(go[0]);
    shared[0] = 0x5eed;
    static unsigned char out[QUEUED];
    for (size_t i = 0; i < QUEUED; i++) out[i] = (unsigned char)(i * 7);
    if (write(data[1], out, QUEUED) != QUEUED) return fail("filling the pipe");

    int efd = eventfd(5, EFD_NONBLOCK);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec its = {{0, 100000000}, {0, 100000000}};
    if (efd < 0 || tfd < 0 || timerfd_settime(tfd, 0, &its, NULL)) return fail("eventfd/timerfd");
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0xeeee};
    epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
    ev.data.u64 = 0x7777;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    int sfd = signalfd(-1, &usr1, SFD_NONBLOCK);
    int dir = open("/usr", O_RDONLY | O_DIRECTORY);
    int rnd = open("/dev/urandom", O_RDONLY);
    if (sfd < 0 || dir < 0 || rnd < 0) return fail("signalfd/dir/urandom");
    int file = open(argv[1], O_RDONLY);
    if (file < 0 || lseek(file, 10, SEEK_SET) != 10) return fail("file");

    pthread_t th[8];
    for (long i = 0; i < 8; i++) pthread_create(&th[i], NULL, count, (void *)i);
    printf("READY pid %d\n", getpid());
    fflush(stdout);

    char line[64];
    if (!fgets(line, sizeof line, stdin)) return fail("stdin");

    long before[8];
    for (int i = 0; i < 8; i++) before[i] = atomic_load(&counters[i]);
    usleep(300000);
    for (int i = 0; i < 8; i++)
        if (atomic_load(&counters[i]) <= before[i]) return fail("a thread stopped counting");
    uint64_t v = 0;
    if (read(efd, &v, 8) != 8 || v != 5) return fail("eventfd count");
    struct epoll_event got[4];
    int n = epoll_wait(ep, got, 4, 2000);
    if (n < 1) return fail("epoll saw nothing");
    int timer_seen = 0;
    for (int i = 0; i < n; i++) timer_seen |= got[i].data.u64 == 0x7777;
    if (!timer_seen) return fail("epoll lost the timerfd's data");
    uint64_t ticks = 0;
    if (read(tfd, &ticks, 8) != 8 || ticks < 1) return fail("timerfd ticks");
    char buf[6] = {0};
    if (read(file, buf, 5) != 5 || strcmp(buf, "abcde") != 0) return fail("file offset");
    kill(getpid(), SIGUSR1);
    struct signalfd_siginfo si;
    if (read(sfd, &si, sizeof si) != sizeof si || si.ssi_signo != SIGUSR1) return fail("signalfd");
    DIR *d = fdopendir(dir);
    int entries = 0;
    while (d && readdir(d)) entries++;
    if (entries < 3) return fail("directory");
    unsigned char r[16];
    if (read(rnd, r, sizeof r) != sizeof r) return fail("/dev/urandom");
    if (write(go[1], "g", 1) != 1) return fail("go");
    int status;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return fail(WIFEXITED(status) && WEXITSTATUS(status) == 6 ? "shared memory (child's view)"
                                                                   : "the pipe's queued bytes");
    if (shared[1] != 0xc0de) return fail("shared memory: the child's write is not seen");
    printf("ALL OK\n");
    fflush(stdout);
    return 0;
}
