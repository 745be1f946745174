/* A process that keeps writing its memory while it is checkpointed, and checks it, for
 * pre-copy (tests/screen_vim/precopy.rs). 256 MiB of pages, each holding words that are a
 * function of the page's index and its generation (kept apart, in `gens`): a step
 * rewrites a page at random with its next generation; every 50 steps one page is dropped
 * (madvise DONTNEED: zeros from then on, until it is written again); every 400 steps an
 * 8 MiB region is unmapped and mapped again at the same place with new content; every
 * 700 steps a 4 MiB region is moved (mremap) between two places. So whatever a checkpoint
 * read of a page before the process changed it again is seen if the image keeps it.
 * Between steps it reads commands, one per line:
 *   check  every byte is what the bookkeeping says: "check ok STEPS" or "check BAD at X"
 *   pause  no more steps until "go" (answers "paused") */
#define _GNU_SOURCE
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MIB (1UL << 20)
#define PAGES (256 * 256)
#define CHURN (8 * MIB)
#define MOVING (4 * MIB)
#define DROPPED 0xffffffffu

static uint64_t *buf;
static uint32_t gens[PAGES];
static uint64_t *churn;
static uint32_t churn_gen;
static uint64_t *places[2];
static int at;
static uint32_t moving_gen;
static unsigned long steps;

static uint64_t word(uint64_t i, uint64_t gen) {
    uint64_t z = i * 0x9e3779b97f4a7c15ULL + gen * 0xd1b54a32d192ed03ULL + 0x1234567;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void fill(uint64_t *p, size_t words, uint64_t first, uint64_t gen) {
    for (size_t k = 0; k < words; k++)
        p[k] = word(first + k, gen);
}

static long check_words(const uint64_t *p, size_t words, uint64_t first, uint64_t gen,
                        int zero) {
    for (size_t k = 0; k < words; k++)
        if (p[k] != (zero ? 0 : word(first + k, gen)))
            return (long)k;
    return -1;
}

static void step(void) {
    static uint64_t seed = 88172645463325252ULL;
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    uint64_t i = seed % PAGES;
    steps++;
    if (steps % 50 == 0) {
        madvise(buf + i * 512, 4096, MADV_DONTNEED);
        gens[i] = DROPPED;
    } else {
        gens[i] = gens[i] == DROPPED ? 1 : gens[i] + 1;
        fill(buf + i * 512, 512, i * 512, gens[i]);
    }
    if (steps % 400 == 0) {
        munmap(churn, CHURN);
        void *p = mmap(churn, CHURN, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (p != churn) {
            perror("mmap");
            exit(1);
        }
        churn_gen++;
        fill(churn, CHURN / 8, 1UL << 40, churn_gen);
    }
    if (steps % 700 == 0) {
        void *p = mremap(places[at], MOVING, MOVING, MREMAP_MAYMOVE | MREMAP_FIXED,
                         places[1 - at]);
        if (p != places[1 - at]) {
            perror("mremap");
            exit(1);
        }
        at = 1 - at;
        /* The place left is mapped again, so the next move has somewhere to go. */
        mmap(places[1 - at], MOVING, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        moving_gen++;
        fill(places[at], 1024, 1UL << 41, moving_gen);
    }
}

static void check(void) {
    for (uint64_t i = 0; i < PAGES; i++) {
        long k = check_words(buf + i * 512, 512, i * 512, gens[i], gens[i] == DROPPED);
        if (k >= 0) {
            /* Which generation the page holds, if any: says which of the two is stale. */
            long held = -1;
            for (uint32_t g = 0; g < 1000000 && held < 0; g++)
                if (buf[i * 512] == word(i * 512, g))
                    held = g;
            printf("check BAD at page %lu word %ld (generation %u; the page holds %ld%s)\n",
                   (unsigned long)i, k, gens[i], held, buf[i * 512] ? "" : ", zeros");
            return;
        }
    }
    long k = check_words(churn, CHURN / 8, 1UL << 40, churn_gen, 0);
    if (k >= 0) {
        printf("check BAD at the churned region, word %ld\n", k);
        return;
    }
    k = check_words(places[at], 1024, 1UL << 41, moving_gen, 0);
    if (k < 0)
        k = check_words(places[at] + 1024, MOVING / 8 - 1024, 1UL << 42, 0, 0);
    if (k >= 0) {
        printf("check BAD at the moved region, word %ld\n", k);
        return;
    }
    printf("check ok %lu\n", steps);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    buf = mmap(NULL, PAGES * 4096UL, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
               -1, 0);
    churn = mmap(NULL, CHURN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *two = mmap(NULL, 2 * MOVING + 4096, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED || churn == MAP_FAILED || two == MAP_FAILED)
        return 1;
    /* Two places with a page between them, so they stay two mappings. */
    munmap(two + MOVING, 4096);
    places[0] = (uint64_t *)two;
    places[1] = (uint64_t *)(two + MOVING + 4096);
    for (uint64_t i = 0; i < PAGES; i++) {
        gens[i] = 1;
        fill(buf + i * 512, 512, i * 512, 1);
    }
    fill(churn, CHURN / 8, 1UL << 40, 0);
    fill(places[0], 1024, 1UL << 41, 0);
    fill(places[0] + 1024, MOVING / 8 - 1024, 1UL << 42, 0);
    printf("precopymem ready\n");
    int paused = 0;
    char line[64];
    for (;;) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        if (poll(&p, 1, paused ? -1 : 0) > 0) {
            if (!fgets(line, sizeof line, stdin))
                return 0;
            if (strncmp(line, "check", 5) == 0)
                check();
            else if (strncmp(line, "pause", 5) == 0) {
                paused = 1;
                printf("paused\n");
            } else if (strncmp(line, "go", 2) == 0)
                paused = 0;
            continue;
        }
        for (int k = 0; k < 8; k++)
            step();
        usleep(500);
    }
}
