/* A stream of queued signals in flight across a checkpoint and resume: a child sends its
 * parent SIGRTMIN with the values 1, 2, 3, ... a few tens of microseconds apart; the parent's handler sees
 * each value once, in order. A checkpoint freezing the parent on its way to one of them
 * (taken from the queue, not yet handled) must bring that one back too: a gap, a repeat
 * or a reordering is reported. Prints READY, waits for a line, stops the child, takes
 * what is still queued, prints SIGSTREAM OK and how many, or what differs. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/wait.h>

static volatile sig_atomic_t last, wrong, wrong_at;

static void got(int sig, siginfo_t *i, void *ctx) {
    (void)sig;
    (void)ctx;
    int v = i->si_value.sival_int;
    if (v != last + 1 && !wrong) {
        wrong = v;
        wrong_at = last;
    }
    last = v;
}

int main(void) {
    struct sigaction sa = {.sa_sigaction = got, .sa_flags = SA_SIGINFO | SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGRTMIN, &sa, NULL);
    pid_t parent = getpid();
    pid_t kid = fork();
    if (kid == 0) {
        for (int n = 1;; n++) {
            union sigval v = {.sival_int = n};
            while (sigqueue(parent, SIGRTMIN, v))
                usleep(100);
            /* (paced: a parent always handling a signal never gets back to its work) */
            usleep(20);
        }
    }
    while (last < 1000)
        usleep(1000);
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    /* Stop the child; what it queued before is handled on the way back from waitpid. */
    kill(kid, SIGKILL);
    waitpid(kid, NULL, 0);
    if (wrong) {
        printf("SIGSTREAM WRONG: %d after %d\n", (int)wrong, (int)wrong_at);
        return 1;
    }
    printf("SIGSTREAM OK (%d signals)\n", (int)last);
    return 0;
}
