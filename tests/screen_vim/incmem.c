/* Memory changed in every way an incremental checkpoint must notice, between checkpoints.
 * Each line read runs the next step and prints "STEP n SUM x": x is a hash of every byte
 * of every region, in this process and in its child (asked through a pipe). Step 1 makes
 * the regions; steps 2 and 3 (after a checkpoint each) change them: pages written, pages
 * written with zeros, pages dropped (MADV_DONTNEED) and read again, a region moved
 * (mremap), one unmapped and mapped again at its place with other content, one split by
 * mprotect, the heap grown (sbrk), a private file mapping written and dropped back to
 * the file (argv[1], made here), and a child forked that writes its copy of a region. A line "sum" prints
 * "NOW SUM x" without changing anything: after a resume it must be the last step's. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096
#define MIB (1 << 20)

static unsigned char *a, *b, *c, *d, *f, *heap;
static size_t heap_len;
static int to_child[2], from_child[2];
static pid_t child = -1;

static uint64_t hash(uint64_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void fill(unsigned char *p, size_t len, unsigned seed) {
    for (size_t i = 0; i < len; i += 8)
        *(uint64_t *)(p + i) = (i * 0x9e3779b97f4a7c15ull) ^ seed;
}

static unsigned char *anon(size_t len) {
    /* A guard page after it keeps the kernel from merging it with its neighbour. */
    unsigned char *p = mmap(NULL, len + PAGE, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || mprotect(p + len, PAGE, PROT_NONE)) {
        perror("mmap");
        exit(1);
    }
    return p;
}

static uint64_t own_sum(void) {
    uint64_t h = 0xcbf29ce484222325ull;
    h = hash(h, a, 4 * MIB);
    h = hash(h, b, MIB);
    h = hash(h, c, MIB);
    h = hash(h, d, 2 * MIB);
    h = hash(h, f, 4 * PAGE);
    h = hash(h, heap, heap_len);
    return h;
}

static uint64_t sum(void) {
    uint64_t h = own_sum(), theirs = 0;
    if (child > 0) {
        if (write(to_child[1], "s", 1) != 1 ||
            read(from_child[0], &theirs, sizeof theirs) != sizeof theirs) {
            puts("INCMEM the child does not answer");
            exit(1);
        }
    }
    return h ^ (theirs * 31);
}

static void child_main(void) {
    /* Its copy of region A: one page its own from now on. */
    memset(a + 7 * PAGE, 0x5a, PAGE);
    char cmd;
    while (read(to_child[0], &cmd, 1) == 1) {
        if (cmd == 'w')
            memset(a + 9 * PAGE + 100, 0x33, 50);
        uint64_t h = own_sum();
        if (write(from_child[1], &h, sizeof h) != sizeof h)
            break;
    }
    _exit(0);
}

int main(int argc, char **argv) {
    char line[64];
    int step = 0;
    setvbuf(stdout, NULL, _IONBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "sum", 3)) {
            printf("NOW SUM %016llx\n", (unsigned long long)sum());
            continue;
        }
        step++;
        if (step == 1) {
            a = anon(4 * MIB), b = anon(MIB), c = anon(MIB), d = anon(2 * MIB);
            fill(a, 4 * MIB, 1), fill(b, MIB, 2), fill(c, MIB, 3), fill(d, 2 * MIB, 4);
            /* A file of four pages (A, B, C, D), mapped privately. */
            int fd = open(argc > 1 ? argv[1] : "incmem.dat", O_RDWR | O_CREAT | O_TRUNC, 0600);
            unsigned char page[PAGE];
            for (int i = 0; i < 4; i++) {
                memset(page, 'A' + i, PAGE);
                if (write(fd, page, PAGE) != PAGE)
                    return 1;
            }
            f = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
            close(fd);
            f[0] = 'x', f[2 * PAGE] = 'y';
            heap = sbrk(0);
            heap_len = MIB;
            if (sbrk(MIB) == (void *)-1)
                return 1;
            fill(heap, MIB, 5);
        } else if (step == 2) {
            /* Written, and written with zeros. */
            fill(a + 3 * PAGE, PAGE, 11);
            memset(a + 5 * PAGE, 0, PAGE);
            /* Dropped: zeros again; one read (the zero page mapped). */
            madvise(a + 10 * PAGE, 10 * PAGE, MADV_DONTNEED);
            volatile unsigned char r = a[12 * PAGE];
            (void)r;
            /* Moved. */
            unsigned char *nb = mmap(NULL, MIB + PAGE, PROT_NONE,
                                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            b = mremap(b, MIB, MIB, MREMAP_MAYMOVE | MREMAP_FIXED, nb);
            /* Unmapped, mapped again at its place: half new, half zeros. */
            munmap(c, MIB);
            c = mmap(c, MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                     -1, 0);
            fill(c, MIB / 2, 13);
            /* Split: the middle read-only, the first page written. */
            mprotect(d + MIB / 2, MIB, PROT_READ);
            fill(d, PAGE, 14);
            /* The heap grown. */
            if (sbrk(MIB) == (void *)-1)
                return 1;
            fill(heap + heap_len, MIB, 15);
            heap_len += MIB;
            /* The file mapping: one page written, one dropped back to the file's. */
            f[PAGE] = 'z';
            madvise(f + 2 * PAGE, PAGE, MADV_DONTNEED);
            /* A child with region A's pages, one its own. */
            if (pipe(to_child) || pipe(from_child))
                return 1;
            child = fork();
            if (child == 0)
                child_main();
        } else {
            /* The moved region and the child's copy written again; a dropped page
             * written. */
            fill(b + 20 * PAGE, PAGE, 21);
            fill(a + 11 * PAGE, PAGE, 22);
            if (write(to_child[1], "w", 1) != 1)
                return 1;
            uint64_t ignored;
            if (read(from_child[0], &ignored, sizeof ignored) != sizeof ignored)
                return 1;
        }
        printf("STEP %d SUM %016llx\n", step, (unsigned long long)sum());
    }
    return 0;
}
