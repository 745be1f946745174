/* Random memory layouts, checked byte for byte across a checkpoint and resume.
 *
 *   layouts SEED MIB
 *
 * From SEED: one anonymous mapping of MIB MiB, filled page by page with content that
 * names the page and the seed; then a few hundred random operations on page ranges:
 * mprotect to none, read-only or read-write (which splits the mapping), munmap (holes),
 * MADV_DONTNEED (pages back to zero), writes of new content into writable pages, pages
 * never touched left alone. A shadow table says what each page must hold. The program
 * prints READY, waits for a line on stdin (the test checkpoints and resumes it meanwhile),
 * then checks every page (reading a page it may not read through a temporary mprotect)
 * and each page's protection as /proc/self/maps shows it, and prints LAYOUT OK or the
 * first difference. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#define PAGE 4096UL

enum { GONE = -1 };

struct page {
    int prot;          /* PROT_*, or GONE when unmapped */
    uint64_t content;  /* 0: zeros (never touched, or dropped); else its content's tag */
};

static uint64_t rng;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void fill(unsigned char *p, uint64_t tag) {
    uint64_t *w = (uint64_t *)p;
    for (unsigned i = 0; i < PAGE / 8; i++)
        w[i] = tag * 0x9e3779b97f4a7c15ULL + i;
}

static int holds(const unsigned char *p, uint64_t tag) {
    const uint64_t *w = (const uint64_t *)p;
    for (unsigned i = 0; i < PAGE / 8; i++)
        if (w[i] != (tag ? tag * 0x9e3779b97f4a7c15ULL + i : 0))
            return 0;
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    uint64_t seed = strtoull(argv[1], 0, 10);
    size_t pages = strtoull(argv[2], 0, 10) * (1 << 20) / PAGE;
    rng = seed * 2654435761ULL + 1;
    unsigned char *base = mmap(0, pages * PAGE, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return 3;
    struct page *shadow = calloc(pages, sizeof *shadow);
    uint64_t tags = 1;
    /* Most pages touched with content; some never touched. */
    for (size_t i = 0; i < pages; i++) {
        shadow[i].prot = PROT_READ | PROT_WRITE;
        if (next() % 8) {
            shadow[i].content = tags++;
            fill(base + i * PAGE, shadow[i].content);
        }
    }
    for (int op = 0; op < 300; op++) {
        size_t from = next() % pages;
        size_t len = 1 + next() % (next() % 4 ? 8 : 512);
        if (from + len > pages)
            len = pages - from;
        int kind = next() % 6;
        for (size_t i = from; i < from + len; i++) {
            if (shadow[i].prot == GONE)
                continue;
            unsigned char *p = base + i * PAGE;
            switch (kind) {
            case 0: mprotect(p, PAGE, PROT_NONE); shadow[i].prot = PROT_NONE; break;
            case 1: mprotect(p, PAGE, PROT_READ); shadow[i].prot = PROT_READ; break;
            case 2: mprotect(p, PAGE, PROT_READ | PROT_WRITE);
                shadow[i].prot = PROT_READ | PROT_WRITE; break;
            case 3: if (next() % 4 == 0) { munmap(p, PAGE); shadow[i].prot = GONE; } break;
            case 4: madvise(p, PAGE, MADV_DONTNEED); shadow[i].content = 0; break;
            case 5:
                if (shadow[i].prot == (PROT_READ | PROT_WRITE)) {
                    shadow[i].content = tags++;
                    fill(p, shadow[i].content);
                }
                break;
            }
        }
    }
    printf("READY seed %llu\n", (unsigned long long)seed);
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        return 4;
    /* Every page's protection, as the kernel says. */
    FILE *maps = fopen("/proc/self/maps", "r");
    char buf[512];
    unsigned char *seen = calloc(pages, 1);
    while (maps && fgets(buf, sizeof buf, maps)) {
        unsigned long s, e;
        char perms[5];
        if (sscanf(buf, "%lx-%lx %4s", &s, &e, perms) != 3)
            continue;
        for (unsigned long a = s; a < e; a += PAGE) {
            if (a < (unsigned long)base || a >= (unsigned long)base + pages * PAGE)
                continue;
            size_t i = (a - (unsigned long)base) / PAGE;
            int prot = (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0);
            seen[i] = 1;
            if (shadow[i].prot != prot) {
                printf("LAYOUT WRONG: page %zu has protection %s, not %d\n", i, perms,
                       shadow[i].prot);
                return 1;
            }
        }
    }
    for (size_t i = 0; i < pages; i++) {
        if ((shadow[i].prot == GONE) != !seen[i]) {
            printf("LAYOUT WRONG: page %zu is %s\n", i, seen[i] ? "mapped again" : "gone");
            return 1;
        }
        if (shadow[i].prot == GONE)
            continue;
        unsigned char *p = base + i * PAGE;
        if (!(shadow[i].prot & PROT_READ))
            mprotect(p, PAGE, PROT_READ);
        int ok = holds(p, shadow[i].content);
        if (!(shadow[i].prot & PROT_READ))
            mprotect(p, PAGE, shadow[i].prot);
        if (!ok) {
            printf("LAYOUT WRONG: page %zu (protection %d) does not hold %s\n", i,
                   shadow[i].prot, shadow[i].content ? "its content" : "zeros");
            return 1;
        }
    }
    printf("LAYOUT OK\n");
    return 0;
}
