/* memfds across a checkpoint and resume. One made with sealing allowed, its content
 * written, mode changed, sealed against growing and shrinking, and mapped shared; a child
 * that opened it again through /proc/PARENT/fd (a description of its own of the same
 * file); one made without sealing (sealed with F_SEAL_SEAL by the kernel); one sealed
 * against writes to come (F_SEAL_FUTURE_WRITE), mapped shared read-only and its
 * descriptor closed, whose mapping may not be made writable. After the
 * resume each must be a memfd of its name (/proc/self/fd shows "/memfd:NAME (deleted)"),
 * with its seals, mode and content, and the parent's, its mapping and the child's must
 * be the one file. Prints READY, waits for a line, checks, prints MEMFD OK or what
 * differs. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

static int bad;

static void check_name(int fd, const char *want) {
    char path[64], got[256] = {0};
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    if (readlink(path, got, sizeof got - 1) < 0 || strcmp(got, want)) {
        printf("NAME WRONG: [%s], not [%s]\n", got, want);
        bad = 1;
    }
}

int main(void) {
    int m = memfd_create("crterm-sealed", MFD_ALLOW_SEALING);
    int u = memfd_create("crterm-plain", 0);
    if (m < 0 || u < 0 || write(m, "sealed content", 14) != 14 || write(u, "plain", 5) != 5)
        return 3;
    if (fchmod(m, 0640) || fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW))
        return 3;
    char *map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
    if (map == MAP_FAILED)
        return 3;
    int ro = memfd_create("crterm-ro", MFD_ALLOW_SEALING);
    if (ro < 0 || write(ro, "read only", 9) != 9 || fcntl(ro, F_ADD_SEALS, F_SEAL_FUTURE_WRITE))
        return 3;
    char *rmap = mmap(NULL, 4096, PROT_READ, MAP_SHARED, ro, 0);
    close(ro);
    if (rmap == MAP_FAILED || mprotect(rmap, 4096, PROT_READ | PROT_WRITE) != -1)
        return 3;
    int to_child[2], from_child[2];
    if (pipe(to_child) || pipe(from_child))
        return 3;
    pid_t child = fork();
    if (child == 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/fd/%d", getppid(), m);
        int again = open(path, O_RDWR);
        if (again < 0)
            _exit(3);
        close(m);
        char c;
        if (write(from_child[1], "r", 1) != 1 || read(to_child[0], &c, 1) != 1)
            _exit(3);
        /* After the resume: what the parent wrote through its mapping is there. */
        char got[16] = {0};
        if (pread(again, got, 14, 0) != 14 || strcmp(got, "SEALED content")) {
            printf("CHILD WRONG: [%s]\n", got);
            _exit(1);
        }
        if (pwrite(again, "C", 1, 13) != 1)
            _exit(1);
        _exit(0);
    }
    char c;
    if (read(from_child[0], &c, 1) != 1)
        return 3;
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    check_name(m, "/memfd:crterm-sealed (deleted)");
    check_name(u, "/memfd:crterm-plain (deleted)");
    int seals = fcntl(m, F_GET_SEALS), useals = fcntl(u, F_GET_SEALS);
    if (seals != (F_SEAL_SHRINK | F_SEAL_GROW)) {
        printf("SEALS WRONG: %#x\n", seals);
        bad = 1;
    }
    if (useals != F_SEAL_SEAL || fcntl(u, F_ADD_SEALS, F_SEAL_GROW) != -1 || errno != EPERM) {
        printf("PLAIN SEALS WRONG: %#x\n", useals);
        bad = 1;
    }
    if (ftruncate(m, 100) != -1 || errno != EPERM) {
        printf("SEALS WRONG: it grows\n");
        bad = 1;
    }
    struct stat st;
    if (fstat(m, &st) || (st.st_mode & 0777) != 0640 || st.st_size != 14) {
        printf("STAT WRONG: mode %o size %ld\n", st.st_mode & 0777, (long)st.st_size);
        bad = 1;
    }
    char got[16] = {0};
    if (pread(u, got, sizeof got, 0) != 5 || strcmp(got, "plain")) {
        printf("PLAIN WRONG: [%s]\n", got);
        bad = 1;
    }
    if (memcmp(rmap, "read only", 9) || mprotect(rmap, 4096, PROT_READ | PROT_WRITE) != -1) {
        printf("SEALED MAPPING WRONG: [%.9s], %s\n", rmap,
               errno == EACCES ? "still not writable" : "made writable");
        bad = 1;
    }
    map[0] = 'S', map[1] = 'E', map[2] = 'A', map[3] = 'L', map[4] = 'E', map[5] = 'D';
    if (write(to_child[1], "g", 1) != 1)
        return 3;
    int status;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status)) {
        printf("CHILD WRONG: status %#x\n", status);
        bad = 1;
    }
    memset(got, 0, sizeof got);
    if (pread(m, got, 14, 0) != 14 || strcmp(got, "SEALED contenC") || map[13] != 'C') {
        printf("ONE FILE WRONG: [%s]\n", got);
        bad = 1;
    }
    if (bad)
        return 1;
    printf("MEMFD OK\n");
    return 0;
}
