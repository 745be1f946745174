/* A job stopped by SIGTSTP (as Ctrl-Z stops it), across a checkpoint and resume: its
 * parent's waitpid must see it stopped by SIGTSTP again, not by SIGSTOP. The child is in a
 * process group of its own (a job, not an orphaned group, whose SIGTSTP would be
 * discarded). Prints READY, waits for a line, checks, prints JOBSTOP OK or what differs. */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/wait.h>

int main(void) {
    pid_t kid = fork();
    if (kid == 0) {
        setpgid(0, 0);
        raise(SIGTSTP);
        _exit(5);
    }
    setpgid(kid, kid);
    int st;
    if (waitpid(kid, &st, WUNTRACED) != kid || !WIFSTOPPED(st) || WSTOPSIG(st) != SIGTSTP) {
        printf("NOT STOPPED %#x\n", st);
        return 1;
    }
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    if (waitpid(kid, &st, WUNTRACED) != kid || !WIFSTOPPED(st) || WSTOPSIG(st) != SIGTSTP) {
        printf("JOBSTOP WRONG: %#x (stopped by %d)\n", st, WIFSTOPPED(st) ? WSTOPSIG(st) : -1);
        return 1;
    }
    kill(kid, SIGCONT);
    if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st) != 5) {
        printf("JOBSTOP WRONG: it did not go on (%#x)\n", st);
        return 1;
    }
    printf("JOBSTOP OK\n");
    return 0;
}
