/* Mappings' flags across a checkpoint and resume: each page below is a mapping of its own
 * with one flag (madvise WIPEONFORK, DONTFORK, DONTDUMP, SEQUENTIAL, RANDOM, MERGEABLE,
 * HUGEPAGE, NOHUGEPAGE; MAP_NORESERVE; MAP_DROPPABLE; mlock, mlock2 on fault; mseal), and
 * two shared mappings of a file, read-only, from a writable and from a read-only open.
 * The VmFlags line smaps gives each must be the same after the resume (but for crterm's
 * own write tracking, "uw"), the first file
 * mapping must still be one mprotect makes writable (and writes reach the file), the
 * second must still refuse that (EACCES), and the sealed page must still refuse munmap.
 * A flag this kernel or this user cannot set is left out and said so. Prints READY,
 * waits for a line, checks, prints VMFLAGS OK or what differs. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define PAGE 4096
#define MAX 32

static char *at[MAX];
static const char *what[MAX];
static char before[MAX][256];
static int n;

static void add(char *p, const char *w) {
    at[n] = p;
    what[n++] = w;
}

/* The VmFlags line of the mapping that starts at p. */
static void flags_of(char *p, char *out, size_t len) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int mine = 0;
    out[0] = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' '))
            mine = s == (unsigned long)p;
        else if (mine && !strncmp(line, "VmFlags:", 8)) {
            snprintf(out, len, "%s", line + 8);
            out[strcspn(out, "\n")] = 0;
            /* Without crterm's write tracking ("uw": registered for userfaultfd
             * write-protection, which a session's memory is from its first checkpoint
             * or resume on, for incremental checkpoints). */
            char *uw = strstr(out, " uw");
            if (uw)
                memmove(uw, uw + 3, strlen(uw + 3) + 1);
            break;
        }
    }
    if (f)
        fclose(f);
}

static char *anon(int pages, int flags) {
    char *p = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | flags, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    memset(p, 7, pages * PAGE);
    return p;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    /* Guard pages around each group, so that no mapping merges with a neighbour. */
    char *a = anon(9, MAP_PRIVATE);
    int advice[] = {MADV_WIPEONFORK, MADV_DONTFORK, MADV_DONTDUMP, MADV_SEQUENTIAL,
                    MADV_RANDOM,     MADV_MERGEABLE, MADV_HUGEPAGE, MADV_NOHUGEPAGE};
    const char *names[] = {"WIPEONFORK", "DONTFORK", "DONTDUMP", "SEQUENTIAL",
                           "RANDOM",     "MERGEABLE", "HUGEPAGE", "NOHUGEPAGE"};
    for (int i = 0; i < 8; i++) {
        if (madvise(a + i * PAGE, PAGE, advice[i]) == 0)
            add(a + i * PAGE, names[i]);
        else
            printf("(no %s here: %s)\n", names[i], strerror(errno));
    }
    mprotect(a + 8 * PAGE, PAGE, PROT_NONE);
    char *r = anon(1, MAP_PRIVATE | MAP_NORESERVE);
    if (r)
        add(r, "NORESERVE");
    char *d = anon(2, 0x08 /* MAP_DROPPABLE */);
    if (d)
        add(d, "DROPPABLE");
    else
        printf("(no MAP_DROPPABLE here)\n");
    char *l = anon(3, MAP_PRIVATE);
    mprotect(l + 2 * PAGE, PAGE, PROT_READ);
    if (mlock(l, PAGE) == 0)
        add(l, "mlock");
    else
        printf("(no mlock: %s)\n", strerror(errno));
    if (syscall(SYS_mlock2, l + PAGE, PAGE, 1 /* MLOCK_ONFAULT */) == 0)
        add(l + PAGE, "mlock2 on fault");
    else
        printf("(no mlock2: %s)\n", strerror(errno));
    char *s = anon(1, MAP_PRIVATE);
    if (syscall(462 /* mseal */, s, PAGE, 0) == 0)
        add(s, "mseal");
    else
        printf("(no mseal here: %s)\n", strerror(errno));
    char path[4096];
    snprintf(path, sizeof path, "%s/mapped", argv[1]);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 2 * PAGE))
        return 3;
    char *rw = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    fd = open(path, O_RDONLY);
    char *ro = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, PAGE);
    close(fd);
    if (rw == MAP_FAILED || ro == MAP_FAILED)
        return 3;
    add(rw, "shared, opened writable");
    add(ro, "shared, opened read-only");
    for (int i = 0; i < n; i++) {
        flags_of(at[i], before[i], sizeof before[i]);
        if (!before[i][0]) {
            printf("SETUP WRONG: %s is no mapping of its own\n", what[i]);
            return 3;
        }
    }
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        char now[256];
        flags_of(at[i], now, sizeof now);
        if (strcmp(now, before[i])) {
            printf("%s WRONG: [%s], was [%s]\n", what[i], now, before[i]);
            bad = 1;
        }
    }
    if (mprotect(rw, PAGE, PROT_READ | PROT_WRITE)) {
        printf("WRITABLE OPEN WRONG: mprotect: %s\n", strerror(errno));
        bad = 1;
    } else {
        memcpy(rw, "reached", 7);
        msync(rw, PAGE, MS_SYNC);
        char got[8] = {0};
        fd = open(path, O_RDONLY);
        if (pread(fd, got, 7, 0) != 7 || strcmp(got, "reached")) {
            printf("WRITABLE OPEN WRONG: the file reads [%s]\n", got);
            bad = 1;
        }
        close(fd);
    }
    if (mprotect(ro, PAGE, PROT_READ | PROT_WRITE) == 0 || errno != EACCES) {
        printf("READ-ONLY OPEN WRONG: mprotect writable: %s\n", strerror(errno));
        bad = 1;
    }
    for (int i = 0; i < n; i++)
        if (!strcmp(what[i], "mseal") && (munmap(s, PAGE) == 0 || errno != EPERM)) {
            printf("MSEAL WRONG: munmap: %s\n", strerror(errno));
            bad = 1;
        }
    if (bad)
        return 1;
    printf("VMFLAGS OK (%d mappings)\n", n);
    return 0;
}
