/* Zombies of every kind, across a checkpoint and resume: children that ended and were not
 * reaped, one killed by SIGKILL in a process group of its own, one that exited with 3, one
 * killed by SIGSEGV (no core: RLIMIT_CORE 0), one that made a session of its own first.
 * It prints READY, waits for a line (the test checkpoints and resumes it meanwhile), then
 * checks each zombie's process group and session (/proc) and its status (waitpid) and
 * prints ZOMBIES OK or what differs. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/wait.h>

static pid_t child(int how) {
    pid_t p = fork();
    if (p)
        return p;
    switch (how) {
    case 0: setpgid(0, 0); kill(getpid(), SIGKILL); break;
    case 1: _exit(3);
    case 2: signal(SIGSEGV, SIG_DFL); kill(getpid(), SIGSEGV); break;
    case 3: setsid(); _exit(7);
    }
    _exit(99);
}

/* Process group and session of `pid`, from /proc. */
static void ids(pid_t pid, int *pgrp, int *sid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    *pgrp = *sid = -1;
    if (!f || !fgets(buf, sizeof buf, f))
        return;
    fclose(f);
    char *rest = strrchr(buf, ')');
    char state;
    int ppid;
    sscanf(rest + 2, "%c %d %d %d", &state, &ppid, pgrp, sid);
}

int main(void) {
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
    pid_t kids[4];
    int pg[4], sid[4];
    for (int i = 0; i < 4; i++)
        kids[i] = child(i);
    /* Until each has ended. */
    for (int i = 0; i < 4; i++) {
        siginfo_t si;
        waitid(P_PID, kids[i], &si, WEXITED | WNOWAIT);
        ids(kids[i], &pg[i], &sid[i]);
    }
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    int want[4] = {SIGKILL, 3 << 8, SIGSEGV, 7 << 8};
    for (int i = 0; i < 4; i++) {
        int p, s, status;
        ids(kids[i], &p, &s);
        if (p != pg[i] || s != sid[i]) {
            printf("ZOMBIE %d: group %d session %d, was %d %d\n", i, p, s, pg[i], sid[i]);
            return 1;
        }
        if (waitpid(kids[i], &status, 0) != kids[i] || status != want[i]) {
            printf("ZOMBIE %d: status %#x, not %#x\n", i, status, want[i]);
            return 1;
        }
    }
    printf("ZOMBIES OK\n");
    return 0;
}
