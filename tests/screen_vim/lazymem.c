/* A process with 1 GiB of memory that checks its own bytes, for lazy resume
 * (tests/screen_vim/lazy.rs). Every 8-byte word of the buffer is a function of its index,
 * so any byte read wrong is seen. Reads commands, one per line, and answers one line:
 *   sys   the kernel touches missing memory: write() from the buffer into a pipe (read
 *         back and checked), read() from a file into the middle of a page (the bytes read
 *         and the rest of the page checked)
 *   drop  madvise(DONTNEED) 4 MiB of the buffer: zeros there from now on
 *   move  mremap 8 MiB of the buffer to another place: the same bytes there
 *   fork  a child checks every byte of the buffer and says so through a pipe
 *   user  this process checks every byte */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define SIZE (1UL << 30)
#define MIB (1UL << 20)
static uint64_t *buf;
static int dropped, moved_away;
static uint64_t *moved;
static unsigned char got_read[5000];
static int did_read;
#define READ_AT (700 * MIB + 1000)
#define DROP_AT (900 * MIB)
#define MOVE_AT (800 * MIB)

static uint64_t word(uint64_t i) {
    uint64_t z = i * 0x9e3779b97f4a7c15ULL + 0x1234567;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* What byte `off` of the buffer should be now. */
static unsigned char expect(uint64_t off) {
    if (dropped && off >= DROP_AT && off < DROP_AT + 4 * MIB)
        return 0;
    if (did_read && off >= READ_AT && off < READ_AT + sizeof got_read)
        return 0xab;
    uint64_t w = word(off / 8);
    return (unsigned char)(w >> (8 * (off % 8)));
}

/* Check every byte; the first wrong offset, or -1. */
static long check(void) {
    const unsigned char *b = (const unsigned char *)buf;
    for (uint64_t i = 0; i < SIZE / 8; i++) {
        uint64_t off = i * 8;
        if (moved_away && off >= MOVE_AT && off < MOVE_AT + 8 * MIB) {
            if (moved[(off - MOVE_AT) / 8] != word(i))
                return (long)off;
            continue;
        }
        if (buf[i] == word(i) && !(dropped && off >= DROP_AT && off < DROP_AT + 4 * MIB) &&
            !(did_read && off + 8 > READ_AT && off < READ_AT + sizeof got_read))
            continue;
        for (int k = 0; k < 8; k++)
            if (b[off + k] != expect(off + k))
                return (long)(off + k);
    }
    return -1;
}

static void say(const char *what, long bad) {
    if (bad < 0)
        printf("%s ok\n", what);
    else
        printf("%s BAD at %ld\n", what, bad);
    fflush(stdout);
}

int main(void) {
    buf = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED)
        return 1;
    for (uint64_t i = 0; i < SIZE / 8; i++)
        buf[i] = word(i);
    printf("lazymem ready\n");
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "sys", 3)) {
            /* write() from missing memory: 1 MiB from the middle of the buffer. */
            int p[2];
            if (pipe(p))
                return 1;
            fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
            const unsigned char *from = (const unsigned char *)buf + 512 * MIB + 123;
            long n = write(p[1], from, MIB);
            long bad = n == (long)MIB ? -1 : 0;
            static unsigned char back[1 << 20];
            long r = 0;
            while (bad < 0 && r < (long)MIB) {
                long k = read(p[0], back + r, MIB - r);
                if (k <= 0) {
                    bad = 1;
                    break;
                }
                r += k;
            }
            for (long i = 0; bad < 0 && i < (long)MIB; i++)
                if (back[i] != expect(512 * MIB + 123 + i))
                    bad = 512 * MIB + 123 + i;
            close(p[0]);
            close(p[1]);
            say("write", bad);
            /* read() into missing memory, in the middle of a page. */
            char path[] = "/tmp/lazymem-XXXXXX";
            int fd = mkstemp(path);
            memset(got_read, 0xab, sizeof got_read);
            if (fd < 0 || write(fd, got_read, sizeof got_read) != sizeof got_read)
                return 1;
            unlink(path);
            lseek(fd, 0, SEEK_SET);
            n = read(fd, (unsigned char *)buf + READ_AT, sizeof got_read);
            close(fd);
            did_read = 1;
            bad = n == sizeof got_read ? -1 : 0;
            const unsigned char *b = (const unsigned char *)buf;
            for (uint64_t off = (READ_AT & ~4095UL); bad < 0 && off < READ_AT + sizeof got_read + 4096;
                 off++)
                if (b[off] != expect(off))
                    bad = (long)off;
            say("read", bad);
        } else if (!strncmp(line, "drop", 4)) {
            madvise((char *)buf + DROP_AT, 4 * MIB, MADV_DONTNEED);
            dropped = 1;
            say("drop", -1);
        } else if (!strncmp(line, "move", 4)) {
            void *to = mmap(NULL, 8 * MIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            moved = mremap((char *)buf + MOVE_AT, 8 * MIB, 8 * MIB, MREMAP_MAYMOVE | MREMAP_FIXED, to);
            moved_away = moved != MAP_FAILED;
            say("move", moved_away ? -1 : 0);
        } else if (!strncmp(line, "fork", 4)) {
            int p[2];
            if (pipe(p))
                return 1;
            pid_t c = fork();
            if (c == 0) {
                long bad = check();
                if (write(p[1], &bad, sizeof bad) != sizeof bad)
                    _exit(1);
                _exit(0);
            }
            long bad = 0;
            if (read(p[0], &bad, sizeof bad) != sizeof bad)
                bad = 0;
            waitpid(c, NULL, 0);
            close(p[0]);
            close(p[1]);
            say("child", bad);
        } else if (!strncmp(line, "user", 4)) {
            say("user", check());
        }
    }
    return 0;
}
