/* O_PATH descriptors across a checkpoint and resume: one on a symbolic link itself
 * (O_PATH | O_NOFOLLOW: the link, not what it points to, here nothing), one on a regular
 * file, one on a directory. Each must still be an O_PATH descriptor of the same object:
 * the link's text read through it, the file's inode, the directory usable with openat.
 * Argument: a directory to work in. Prints READY, waits for a line, checks, prints
 * OPATH OK or what differs. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2)
        return 3;
    char link[512], file[512];
    snprintf(link, sizeof link, "%s/opath-link", argv[1]);
    snprintf(file, sizeof file, "%s/opath-file", argv[1]);
    unlink(link);
    if (symlink("nowhere/at/all", link))
        return 3;
    FILE *f = fopen(file, "w");
    if (!f || fputs("content", f) < 0 || fclose(f))
        return 3;
    int l = open(link, O_PATH | O_NOFOLLOW);
    int r = open(file, O_PATH);
    int d = open(argv[1], O_PATH | O_DIRECTORY);
    if (l < 0 || r < 0 || d < 0)
        return 3;
    struct stat before;
    if (fstat(r, &before))
        return 3;
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    int bad = 0;
    struct stat st;
    char text[64] = {0};
    if (fstatat(l, "", &st, AT_EMPTY_PATH) || !S_ISLNK(st.st_mode)) {
        printf("LINK WRONG: not a symbolic link (%s)\n", strerror(errno));
        bad = 1;
    } else if (readlinkat(l, "", text, sizeof text - 1) < 0 || strcmp(text, "nowhere/at/all")) {
        printf("LINK WRONG: [%s] %s\n", text, strerror(errno));
        bad = 1;
    }
    int fl[3] = {fcntl(l, F_GETFL), fcntl(r, F_GETFL), fcntl(d, F_GETFL)};
    for (int i = 0; i < 3; i++)
        if (fl[i] < 0 || !(fl[i] & O_PATH)) {
            printf("FLAGS WRONG: descriptor %d has %#x\n", i, fl[i]);
            bad = 1;
        }
    char c;
    if (read(r, &c, 1) != -1 || errno != EBADF) {
        printf("FILE WRONG: reads through an O_PATH descriptor\n");
        bad = 1;
    }
    if (fstat(r, &st) || st.st_ino != before.st_ino || st.st_dev != before.st_dev) {
        printf("FILE WRONG: another inode\n");
        bad = 1;
    }
    int again = openat(d, "opath-file", O_RDONLY);
    char got[16] = {0};
    if (again < 0 || read(again, got, sizeof got) != 7 || strcmp(got, "content")) {
        printf("DIRECTORY WRONG: [%s] %s\n", got, strerror(errno));
        bad = 1;
    }
    unlink(link);
    unlink(file);
    if (bad)
        return 1;
    printf("OPATH OK\n");
    return 0;
}
