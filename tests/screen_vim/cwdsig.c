/* A process in a directory deleted since it entered it, with a parent-death signal set,
 * across a checkpoint and resume: it is still in a deleted directory of that name, and
 * its parent-death signal is still SIGHUP. Prints READY, waits for a line, checks,
 * prints CWDSIG OK or what differs. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/stat.h>

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    char dir[PATH_MAX], want[PATH_MAX + 16], got[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/gone", argv[1]);
    if (mkdir(dir, 0700) || chdir(dir) || rmdir(dir))
        return 3;
    prctl(PR_SET_PDEATHSIG, SIGHUP);
    snprintf(want, sizeof want, "%s (deleted)", dir);
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    ssize_t n = readlink("/proc/self/cwd", got, sizeof got - 1);
    got[n > 0 ? n : 0] = 0;
    if (strcmp(got, want)) {
        printf("CWD WRONG: %s\n", got);
        return 1;
    }
    int sig = 0;
    prctl(PR_GET_PDEATHSIG, &sig);
    if (sig != SIGHUP) {
        printf("PDEATHSIG WRONG: %d\n", sig);
        return 1;
    }
    printf("CWDSIG OK\n");
    return 0;
}
