/* A pipe with three open file descriptions of its read end across a checkpoint and
 * resume: the one pipe() made (blocking), one opened again through /proc/self/fd
 * read-only with O_NONBLOCK, one opened read-write; and the write end. Each must keep
 * its own flags (not merged into one description), all must still be ends of the one
 * pipe, and what was queued must still be there once. Prints READY, waits for a line,
 * checks, prints PIPEDESC OK or what differs. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    int p[2];
    if (pipe(p))
        return 3;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", p[0]);
    int nb = open(path, O_RDONLY | O_NONBLOCK);
    int rw = open(path, O_RDWR);
    if (nb < 0 || rw < 0 || write(p[1], "queued", 6) != 6)
        return 3;
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    int bad = 0;
    int fl = fcntl(p[0], F_GETFL), fn = fcntl(nb, F_GETFL), fr = fcntl(rw, F_GETFL);
    if ((fl & O_NONBLOCK) || (fl & O_ACCMODE) != O_RDONLY) {
        printf("FIRST WRONG: flags %#x\n", fl);
        bad = 1;
    }
    if (!(fn & O_NONBLOCK) || (fn & O_ACCMODE) != O_RDONLY) {
        printf("NONBLOCKING WRONG: flags %#x\n", fn);
        bad = 1;
    }
    if ((fr & O_NONBLOCK) || (fr & O_ACCMODE) != O_RDWR) {
        printf("READ-WRITE WRONG: flags %#x\n", fr);
        bad = 1;
    }
    /* One pipe: what was queued reads once, through any of them; what the read-write one
     * writes comes out of the first; the non-blocking one then finds it empty. */
    char got[16] = {0};
    if (read(nb, got, sizeof got) != 6 || strcmp(got, "queued")) {
        printf("QUEUE WRONG: [%s]\n", got);
        bad = 1;
    }
    if (write(rw, "x", 1) != 1) {
        printf("READ-WRITE WRONG: write: %s\n", strerror(errno));
        bad = 1;
    }
    memset(got, 0, sizeof got);
    if (read(p[0], got, sizeof got) != 1 || strcmp(got, "x")) {
        printf("ONE PIPE WRONG: [%s]\n", got);
        bad = 1;
    }
    if (read(nb, got, 1) != -1 || errno != EAGAIN) {
        printf("EMPTY WRONG: %s\n", strerror(errno));
        bad = 1;
    }
    if (bad)
        return 1;
    printf("PIPEDESC OK\n");
    return 0;
}
