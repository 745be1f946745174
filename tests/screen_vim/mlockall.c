/* mlockall(MCL_FUTURE) across a checkpoint and resume: what it sets shows only in the
 * mappings made after it (the kernel's default flags for new mappings), so each process
 * maps a page after the resume and reads that page's VmFlags in smaps. Three processes:
 * the parent with mlockall(MCL_FUTURE), a child with MCL_FUTURE | MCL_ONFAULT, and a child
 * with neither (a lock must not come back where there was none). Prints READY, waits
 * for a line, checks, prints MLOCKALL OK or what differs. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>

#ifndef MCL_ONFAULT
#define MCL_ONFAULT 4
#endif

/* Whether the VmFlags of the mapping that starts at p name flag (two letters). */
static int has_flag(char *p, const char *flag) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int mine = 0, found = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' '))
            mine = s == (unsigned long)p;
        else if (mine && !strncmp(line, "VmFlags:", 8)) {
            for (char *w = strtok(line + 8, " \n"); w; w = strtok(NULL, " \n"))
                found |= !strcmp(w, flag);
            break;
        }
    }
    if (f)
        fclose(f);
    return found;
}

/* A fresh page's flags: locked or not, on fault or not, as `name` expects. */
static int check(const char *name, int locked, int onfault) {
    char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        printf("%s: mmap failed\n", name);
        return 0;
    }
    int lo = has_flag(p, "lo"), lf = has_flag(p, "lf");
    munmap(p, 4096);
    if (lo != locked || lf != onfault) {
        printf("%s WRONG: a new mapping is %slocked%s\n", name, lo ? "" : "not ",
               lf ? " on fault" : "");
        return 0;
    }
    return 1;
}

static pid_t child(int go, int flags, const char *name, int locked, int onfault) {
    pid_t pid = fork();
    if (pid)
        return pid;
    if (flags && mlockall(flags)) {
        printf("%s: mlockall: %m\n", name);
        _exit(3);
    }
    char c;
    if (read(go, &c, 1) != 1)
        _exit(2);
    _exit(check(name, locked, onfault) ? 0 : 1);
}

int main(void) {
    int go[2];
    if (pipe(go))
        return 3;
    pid_t a = child(go[0], MCL_FUTURE | MCL_ONFAULT, "ONFAULT", 1, 1);
    pid_t b = child(go[0], 0, "NONE", 0, 0);
    if (mlockall(MCL_FUTURE)) {
        printf("FUTURE: mlockall: %m\n");
        return 3;
    }
    /* Before the checkpoint, as the kernel shows it. */
    if (!check("FUTURE before", 1, 0))
        return 3;
    usleep(100000);
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    int ok = check("FUTURE", 1, 0);
    if (write(go[1], "xx", 2) != 2)
        return 3;
    int st;
    ok &= waitpid(a, &st, 0) == a && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    ok &= waitpid(b, &st, 0) == b && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!ok)
        return 1;
    printf("MLOCKALL OK\n");
    return 0;
}
