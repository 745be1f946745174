/* Memory shared copy-on-write between a parent and its child across a checkpoint and
 * resume. Region A (64 MiB, every page different) is written by the parent before fork
 * and left alone, but for one page the child changes and one the parent changes; region
 * B (8 MiB) the child writes over entirely after fork; region C (8 MiB) the child drops
 * half of (MADV_DONTNEED: zeros again for it, the parent's for the parent). After the
 * resume every byte must be as it was in each process, and region A must still be
 * shared: each process's smaps shows it (nearly) all Shared_Dirty, not private, so the
 * session takes the memory it took. Prints READY, waits for a line, checks, prints
 * COWSHARE OK or what differs. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096
#define A_PAGES (64 * 256)
#define B_PAGES (8 * 256)
#define C_PAGES (8 * 256)

static unsigned char *a, *b, *c;

/* A mapping of its own: a PROT_NONE guard page after it keeps the kernel from merging
 * it with the next one made. */
static unsigned char *region(size_t pages) {
    unsigned char *p = mmap(NULL, (pages + 1) * PAGE, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || mprotect(p + pages * PAGE, PAGE, PROT_NONE))
        return NULL;
    return p;
}

static void fill(unsigned char *p, size_t pages, unsigned seed) {
    for (size_t i = 0; i < pages; i++)
        for (size_t j = 0; j < PAGE; j += 8)
            *(unsigned long *)(p + i * PAGE + j) = (i * 2654435761u + j) ^ seed;
}

static long bad_pages(const unsigned char *p, size_t from, size_t to, unsigned seed,
                      long skip) {
    long bad = 0;
    for (size_t i = from; i < to; i++) {
        if ((long)i == skip)
            continue;
        for (size_t j = 0; j < PAGE; j += 8)
            if (*(unsigned long *)(p + i * PAGE + j) != ((i * 2654435761u + j) ^ seed)) {
                bad++;
                break;
            }
    }
    return bad;
}

/* Shared_Dirty and Private_Dirty (kB) of the mapping starting at p, from smaps. */
static void dirty(const void *p, long *shared, long *private) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0;
    *shared = *private = -1;
    while (f && fgets(line, sizeof line, f)) {
        /* A mapping's line starts with its address (lowercase hex); fields with a name. */
        if ((line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f')) {
            in = strtoul(line, NULL, 16) == (unsigned long)p;
            continue;
        }
        if (in) {
            sscanf(line, "Shared_Dirty: %ld", shared);
            sscanf(line, "Private_Dirty: %ld", private);
        }
    }
    if (f)
        fclose(f);
}

static int check(const char *who, int child) {
    int bad = 0;
    long n = bad_pages(a, 0, A_PAGES, 1, child ? 5 : 9);
    if (n || a[(child ? 5 : 9) * PAGE] != (child ? 'C' : 'P')) {
        printf("%s: REGION A WRONG: %ld pages\n", who, n);
        bad = 1;
    }
    n = bad_pages(b, 0, B_PAGES, child ? 3 : 2, -1);
    if (n) {
        printf("%s: REGION B WRONG: %ld pages\n", who, n);
        bad = 1;
    }
    n = bad_pages(c, child ? C_PAGES / 2 : 0, C_PAGES, 4, -1);
    for (size_t i = 0; child && i < C_PAGES / 2 * PAGE; i++)
        if (c[i]) {
            printf("%s: REGION C WRONG: byte %zu is %d, not 0\n", who, i, c[i]);
            bad = 1;
            break;
        }
    if (n) {
        printf("%s: REGION C WRONG: %ld pages\n", who, n);
        bad = 1;
    }
    long shared, private;
    dirty(a, &shared, &private);
    if (shared < 60 * 1024 || private > 1024) {
        printf("%s: NOT SHARED: region A has %ld kB shared, %ld kB private\n", who, shared,
               private);
        bad = 1;
    }
    return bad;
}

int main(void) {
    a = region(A_PAGES), b = region(B_PAGES), c = region(C_PAGES);
    if (!a || !b || !c)
        return 3;
    fill(a, A_PAGES, 1);
    fill(b, B_PAGES, 2);
    fill(c, C_PAGES, 4);
    int go[2], done[2];
    if (pipe(go) || pipe(done))
        return 3;
    pid_t kid = fork();
    if (kid == 0) {
        a[5 * PAGE] = 'C';
        fill(b, B_PAGES, 3);
        madvise(c, C_PAGES / 2 * PAGE, MADV_DONTNEED);
        char x;
        if (write(done[1], "r", 1) != 1 || read(go[0], &x, 1) != 1)
            _exit(3);
        _exit(check("CHILD", 1));
    }
    a[9 * PAGE] = 'P';
    char x;
    if (read(done[0], &x, 1) != 1)
        return 3;
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    int bad = check("PARENT", 0);
    if (write(go[1], "g", 1) != 1)
        return 3;
    int status;
    if (waitpid(kid, &status, 0) != kid || !WIFEXITED(status) || WEXITSTATUS(status))
        bad = 1;
    if (bad)
        return 1;
    printf("COWSHARE OK\n");
    return 0;
}
