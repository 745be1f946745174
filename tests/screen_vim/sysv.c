/* SysV IPC across a checkpoint and resume, in the session's own IPC namespace:
 * - segment A (IPC_PRIVATE, mode 0640, 3 pages and a bit) attached read-write by the
 *   parent, read-only by it a second time, and by a child (inherited); part of the
 *   first attachment made read-only with mprotect (two mappings);
 * - segment B (a key, 2 pages) not attached by anyone, with content;
 * - segment C attached by the parent and removed (IPC_RMID) while attached;
 * - a semaphore set (a key, 3 semaphores) with values 3, 0, 7;
 * - a message queue (a key) holding three messages of two types, its size lowered.
 * Prints READY, waits for a line, then checks ids, keys, modes, sizes, attach counts,
 * contents (and that the child sees what the parent writes), values and messages, and
 * prints SYSV OK or what differs. With "undo", a semop with SEM_UNDO first (refused at
 * checkpoint). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define SIZE_A (3 * 4096 + 100)
static int bad;
#define CHECK(c, ...) do { if (!(c)) { printf("WRONG: " __VA_ARGS__); printf("\n"); bad = 1; } } while (0)

struct msg { long type; char text[2000]; };

int main(int argc, char **argv) {
    int undo = argc > 1 && !strcmp(argv[1], "undo");
    int a = shmget(IPC_PRIVATE, SIZE_A, IPC_CREAT | 0640);
    int b = shmget(0x5eed0001, 8192, IPC_CREAT | 0600);
    int c = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
    int s = semget(0x5eed0002, 3, IPC_CREAT | 0600);
    int q = msgget(0x5eed0003, IPC_CREAT | 0620);
    if (a < 0 || b < 0 || c < 0 || s < 0 || q < 0) {
        perror("get");
        return 1;
    }
    char *pa = shmat(a, NULL, 0), *pr = shmat(a, NULL, SHM_RDONLY);
    char *pb = shmat(b, NULL, 0), *pc = shmat(c, NULL, 0);
    for (int i = 0; i < SIZE_A; i++)
        pa[i] = (char)(i * 7 + 1);
    strcpy(pb + 5000, "segment b");
    shmdt(pb);
    strcpy(pc, "segment c");
    shmctl(c, IPC_RMID, NULL);
    mprotect(pa + 8192, 8192, PROT_READ);
    unsigned short vals[3] = {3, 0, 7};
    semctl(s, 0, SETALL, vals);
    if (undo) {
        struct sembuf op = {1, 1, SEM_UNDO};
        semop(s, &op, 1);
    }
    struct msg m = {1, "first"};
    msgsnd(q, &m, 6, 0);
    m.type = 2;
    strcpy(m.text, "second");
    msgsnd(q, &m, 7, 0);
    m.type = 1;
    memset(m.text, 'x', 1000);
    msgsnd(q, &m, 1000, 0);
    struct msqid_ds qd;
    msgctl(q, IPC_STAT, &qd);
    qd.msg_qbytes = 4000;
    msgctl(q, IPC_SET, &qd);
    int to_child[2], from_child[2];
    pipe(to_child);
    pipe(from_child);
    pid_t child = fork();
    if (child == 0) {
        char x;
        read(to_child[0], &x, 1);
        /* The parent wrote 'Z' at 4000 after the resume: one segment for both. */
        x = pa[4000] == 'Z' && pc[0] == 's' ? 'y' : 'n';
        write(from_child[1], &x, 1);
        return 0;
    }
    struct shmid_ds d;
    shmctl(a, IPC_STAT, &d);
    unsigned long nattch = d.shm_nattch; /* (the kernel counts mappings: 6 here) */
    printf("READY a=%d b=%d c=%d s=%d q=%d\n", a, b, c, s, q);
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        return 1;
    CHECK(shmctl(a, IPC_STAT, &d) == 0, "segment a is gone");
    CHECK(d.shm_segsz == SIZE_A && (d.shm_perm.mode & 0777) == 0640, "segment a: size %zu mode %o", d.shm_segsz, d.shm_perm.mode);
    CHECK(d.shm_nattch == nattch, "segment a: %lu attachments, not %lu", (unsigned long)d.shm_nattch, nattch);
    int same = 1;
    for (int i = 0; i < SIZE_A; i++)
        same &= pa[i] == (char)(i * 7 + 1) && pr[i] == pa[i];
    CHECK(same, "segment a's content");
    CHECK(shmget(0x5eed0001, 0, 0) == b, "segment b's key");
    pb = shmat(b, NULL, SHM_RDONLY);
    CHECK(pb != (void *)-1 && !strcmp(pb + 5000, "segment b"), "segment b's content");
    CHECK(shmctl(c, IPC_STAT, &d) == 0 && (d.shm_perm.mode & SHM_DEST) && d.shm_nattch == 2, "segment c: mode %o, %lu attachments", d.shm_perm.mode, (unsigned long)d.shm_nattch);
    CHECK(!strcmp(pc, "segment c"), "segment c's content");
    pa[4000] = 'Z';
    char x = 0;
    write(to_child[1], "g", 1);
    read(from_child[0], &x, 1);
    CHECK(x == 'y', "the child does not see the parent's write (%c)", x);
    waitpid(child, NULL, 0);
    /* A write to the read-only part faults. */
    CHECK(semget(0x5eed0002, 0, 0) == s, "the semaphore set's key");
    unsigned short got[3] = {9, 9, 9};
    semctl(s, 0, GETALL, got);
    CHECK(got[0] == 3 && got[1] == undo && got[2] == 7, "values %u %u %u", got[0], got[1], got[2]);
    struct sembuf op = {2, -7, IPC_NOWAIT};
    CHECK(semop(s, &op, 1) == 0, "semop");
    CHECK(msgget(0x5eed0003, 0) == q, "the queue's key");
    msgctl(q, IPC_STAT, &qd);
    CHECK(qd.msg_qbytes == 4000 && qd.msg_qnum == 3 && (qd.msg_perm.mode & 0777) == 0620, "queue: %lu bytes, %lu messages, mode %o", (unsigned long)qd.msg_qbytes, (unsigned long)qd.msg_qnum, qd.msg_perm.mode);
    ssize_t n = msgrcv(q, &m, sizeof m.text, 2, IPC_NOWAIT);
    CHECK(n == 7 && !strcmp(m.text, "second"), "type 2: %zd", n);
    n = msgrcv(q, &m, sizeof m.text, 0, IPC_NOWAIT);
    CHECK(n == 6 && m.type == 1 && !strcmp(m.text, "first"), "first: %zd", n);
    n = msgrcv(q, &m, sizeof m.text, 0, IPC_NOWAIT);
    CHECK(n == 1000 && m.text[999] == 'x', "third: %zd", n);
    printf(bad ? "SYSV WRONG\n" : "SYSV OK\n");
    return bad;
}
