/* Two processes sharing one memory (clone with CLONE_VM, not a thread: a process of its
 * own). Prints READY, waits for a line, ends the child, prints SHAREDVM OVER. */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>

static int child(void *arg) {
    (void)arg;
    for (;;)
        pause();
    return 0;
}

int main(void) {
    size_t size = 1 << 16;
    char *stack = malloc(size);
    pid_t kid = clone(child, stack + size, CLONE_VM | SIGCHLD, NULL);
    if (kid < 0)
        return 3;
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    kill(kid, SIGKILL);
    waitpid(kid, NULL, 0);
    printf("SHAREDVM OVER\n");
    return 0;
}
