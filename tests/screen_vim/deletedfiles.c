/* Files deleted while open, across a checkpoint and resume. One file, mode 0640, held
 * through three descriptions: the parent's read-write one (also mapped shared), the
 * parent's read-only one, and one its child opened itself; after the resume they must be
 * one file again (what one writes, through the descriptor or the mapping, the others
 * read) with its mode. A sparse file (one block of data in a megabyte) must keep its
 * holes where they were. Prints READY, waits for a line, checks, prints DELETEDFILES OK
 * or what differs. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

static void layout(int fd, long out[3]) {
    struct stat st;
    fstat(fd, &st);
    out[0] = lseek(fd, 0, SEEK_DATA);
    out[1] = lseek(fd, out[0], SEEK_HOLE);
    out[2] = st.st_size;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    char path[4096], sparse[4096];
    snprintf(path, sizeof path, "%s/shared", argv[1]);
    snprintf(sparse, sizeof sparse, "%s/sparse", argv[1]);
    umask(0);
    int rw = open(path, O_RDWR | O_CREAT | O_TRUNC, 0640);
    if (rw < 0 || write(rw, "first-words.....", 16) != 16)
        return 3;
    int ro = open(path, O_RDONLY);
    char *map = mmap(NULL, 16, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0);
    int to_kid[2], from_kid[2];
    if (ro < 0 || map == MAP_FAILED || pipe(to_kid) || pipe(from_kid))
        return 3;
    pid_t kid = fork();
    if (kid == 0) {
        int mine = open(path, O_RDONLY);
        char c, got[17] = {0};
        if (write(from_kid[1], "o", 1) != 1 || read(to_kid[0], &c, 1) != 1)
            _exit(2);
        pread(mine, got, 16, 0);
        write(from_kid[1], got, 16);
        _exit(0);
    }
    char c;
    if (read(from_kid[0], &c, 1) != 1)
        return 3;
    int sp = open(sparse, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (sp < 0 || ftruncate(sp, 1 << 20) || pwrite(sp, "x", 1, 512 << 10) != 1)
        return 3;
    long before[3];
    layout(sp, before);
    unlink(path);
    unlink(sparse);
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    int bad = 0;
    struct stat st;
    fstat(rw, &st);
    if ((st.st_mode & 07777) != 0640) {
        printf("MODE WRONG: %o\n", st.st_mode & 07777);
        bad = 1;
    }
    /* Through the read-write descriptor, seen by the read-only one and the mapping. */
    pwrite(rw, "second-words....", 16, 0);
    char got[17] = {0};
    pread(ro, got, 16, 0);
    if (strcmp(got, "second-words....") || memcmp(map, "second-words....", 16)) {
        printf("ONE FILE WRONG: [%s] [%.16s]\n", got, map);
        bad = 1;
    }
    /* Through the mapping, seen by the child's own description. */
    memcpy(map, "third-words.....", 16);
    if (write(to_kid[1], "g", 1) != 1 || read(from_kid[0], got, 16) != 16 ||
        strcmp(got, "third-words.....")) {
        printf("CHILD'S DESCRIPTION WRONG: [%s]\n", got);
        bad = 1;
    }
    waitpid(kid, NULL, 0);
    long after[3];
    layout(sp, after);
    if (memcmp(before, after, sizeof before)) {
        printf("SPARSE WRONG: data at %ld, hole at %ld, size %ld; was %ld, %ld, %ld\n", after[0],
               after[1], after[2], before[0], before[1], before[2]);
        bad = 1;
    }
    if (bad)
        return 1;
    printf("DELETEDFILES OK\n");
    return 0;
}
