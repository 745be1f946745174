/* Mappings of a file deleted since, with no descriptor of it left open, across a
 * checkpoint and resume: a private and a shared mapping of a three-page file of which
 * only the first page was ever read (the other pages were never brought in), and a
 * private and a shared mapping longer than their file (the pages past its end are no
 * file's: touching them raises SIGBUS, before and after). Every page of the file must
 * read as it was. Prints READY, waits for a line, checks, prints DELETEDMAP OK or what
 * differs. */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#define PAGE 4096

static char want[3 * PAGE];

static char *mapped(const char *dir, const char *name, int flags, size_t len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, want, sizeof want) != sizeof want)
        return NULL;
    char *p = mmap(NULL, len, PROT_READ, flags, fd, 0);
    close(fd);
    unlink(path);
    return p == MAP_FAILED ? NULL : p;
}

static int same(const char *what, const char *p) {
    for (int i = 0; i < 3 * PAGE; i++)
        if (p[i] != want[i]) {
            printf("%s WRONG at byte %d: %d, not %d\n", what, i, p[i], want[i]);
            return 0;
        }
    return 1;
}

static sigjmp_buf back;

static void on_bus(int sig) {
    (void)sig;
    siglongjmp(back, 1);
}

/* Whether reading p raises SIGBUS. */
static int bus_at(volatile char *p) {
    if (sigsetjmp(back, 1))
        return 1;
    volatile char c = *p;
    (void)c;
    return 0;
}

/* The pages of a five-page mapping of a three-page file: the file's read, the two past
 * its end raise SIGBUS. */
static int past_end(const char *what, char *p) {
    for (int i = 3; i < 5; i++)
        if (!bus_at(p + i * PAGE)) {
            printf("%s WRONG: page %d, past the file's end, reads without SIGBUS\n", what, i);
            return 0;
        }
    return same(what, p);
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    for (int i = 0; i < 3 * PAGE; i++)
        want[i] = (char)(i * 7 + i / PAGE + 1);
    char *priv = mapped(argv[1], "private", MAP_PRIVATE, 3 * PAGE);
    char *shared = mapped(argv[1], "shared", MAP_SHARED, 3 * PAGE);
    char *longer = mapped(argv[1], "longer", MAP_PRIVATE, 5 * PAGE);
    char *slonger = mapped(argv[1], "slonger", MAP_SHARED, 5 * PAGE);
    if (!priv || !shared || !longer || !slonger)
        return 3;
    signal(SIGBUS, on_bus);
    if (!past_end("LONGER before", longer) || !past_end("SHARED LONGER before", slonger))
        return 3;
    /* Read the first page, then drop the others from the page tables (reading one page
     * maps its neighbours too), so that only the file holds them. */
    volatile char first = priv[0] + shared[0] + longer[0] + slonger[0];
    (void)first;
    madvise(priv + PAGE, 2 * PAGE, MADV_DONTNEED);
    madvise(shared + PAGE, 2 * PAGE, MADV_DONTNEED);
    madvise(longer + PAGE, 4 * PAGE, MADV_DONTNEED);
    madvise(slonger + PAGE, 4 * PAGE, MADV_DONTNEED);
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    if (!same("PRIVATE", priv) || !same("SHARED", shared) || !past_end("LONGER", longer) ||
        !past_end("SHARED LONGER", slonger))
        return 1;
    printf("DELETEDMAP OK\n");
    return 0;
}
