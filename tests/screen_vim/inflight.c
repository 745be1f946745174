/* Descriptors in flight: sent with SCM_RIGHTS and not received yet when the session is
 * checkpointed. Given a file of at least 20 bytes, it sends
 * - over a stream pair: "abc", then "msg1" carrying a pipe's read end and the file (opened
 *   at offset 5, and kept open here too: one description), "xyz", "m2" carrying one end of
 *   another stream pair (with "hello from u0" queued in it), and "tail" carrying the
 *   file opened again at offset 2 (a description only the message holds);
 * - over a datagram pair: "d0", "d1" carrying an eventfd (count 7) and the pipe's write
 *   end, and "d2";
 * - over a seqpacket pair: "q1" carrying the receiving end of the datagram pair (whose
 *   queue holds descriptors in flight itself);
 * and closes its own copies of all but the file. It prints READY, waits for a line, then
 * receives everything, uses what it received, and prints one RESULT line of what it
 * found: the same line whether or not a checkpoint came in between. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

static void send_fds(int sock, const char *text, const int *fds, int n) {
    char control[CMSG_SPACE(sizeof(int) * 4)];
    struct iovec iov = {(void *)text, strlen(text)};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (n > 0) {
        memset(control, 0, sizeof control);
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * n);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
    }
    if (sendmsg(sock, &msg, 0) != (ssize_t)strlen(text)) {
        perror("sendmsg");
        exit(1);
    }
}

/* One receive of at most `cap` bytes: appends "text/N " to out (N descriptors came), and
 * puts the descriptors in fds. */
static int receive(int sock, size_t cap, int *fds, char *out) {
    char buf[256], control[CMSG_SPACE(sizeof(int) * 8)];
    struct iovec iov = {buf, cap};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
        strcat(out, "none ");
        return 0;
    }
    int count = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            memcpy(fds + count, CMSG_DATA(c), sizeof(int) * k);
            count += k;
        }
    sprintf(out + strlen(out), "%.*s/%d ", (int)n, buf, count);
    return count;
}

static void text_of(int fd, size_t n, char *out) {
    char buf[64] = {0};
    ssize_t got = read(fd, buf, n);
    sprintf(out + strlen(out), "[%s] ", got > 0 ? buf : "?");
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    int file = open(argv[1], O_RDONLY);
    int pipefd[2], s[2], u[2], d[2], q[2];
    if (file < 0 || pipe(pipefd) || socketpair(AF_UNIX, SOCK_STREAM, 0, s) ||
        socketpair(AF_UNIX, SOCK_STREAM, 0, u) || socketpair(AF_UNIX, SOCK_DGRAM, 0, d) ||
        socketpair(AF_UNIX, SOCK_SEQPACKET, 0, q)) {
        perror("setup");
        return 1;
    }
    lseek(file, 5, SEEK_SET);
    int ev = eventfd(7, 0);
    if (write(pipefd[1], "through the pipe", 16) != 16 || write(u[0], "hello from u0", 13) != 13)
        return 1;
    send_fds(s[0], "abc", NULL, 0);
    send_fds(s[0], "msg1", (int[]){pipefd[0], file}, 2);
    send_fds(s[0], "xyz", NULL, 0);
    send_fds(s[0], "m2", (int[]){u[1]}, 1);
    int only = open(argv[1], O_RDONLY);
    lseek(only, 2, SEEK_SET);
    send_fds(s[0], "tail", (int[]){only}, 1);
    send_fds(d[0], "d0", NULL, 0);
    send_fds(d[0], "d1", (int[]){ev, pipefd[1]}, 2);
    send_fds(d[0], "d2", NULL, 0);
    send_fds(q[0], "q1", (int[]){d[1]}, 1);
    close(pipefd[0]);
    close(pipefd[1]);
    close(u[1]);
    close(ev);
    close(d[1]);
    close(only);
    printf("READY\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        return 1;

    char out[2048] = "RESULT ";
    int got[16];
    /* The stream: reads stop after a message that carries files. */
    int pr = -1;
    int n = receive(s[1], 100, got, out);
    if (n == 2) {
        pr = got[0];
        text_of(got[0], 16, out);
        text_of(got[1], 3, out);
        sprintf(out + strlen(out), "offset %ld ", (long)lseek(file, 0, SEEK_CUR));
    }
    n = receive(s[1], 100, got, out);
    if (n == 1) {
        text_of(got[0], 13, out);
        if (write(got[0], "back", 4) == 4)
            text_of(u[0], 4, out);
    }
    if (receive(s[1], 100, got, out) == 1)
        text_of(got[0], 3, out);
    receive(s[1], 100, got, out);
    /* The seqpacket message brings the datagram socket, whose queue holds files. */
    n = receive(q[1], 100, got, out);
    if (n == 1) {
        int dsock = got[0];
        receive(dsock, 100, got, out);
        n = receive(dsock, 100, got, out);
        if (n == 2) {
            uint64_t count = 0;
            if (read(got[0], &count, 8) == 8)
                sprintf(out + strlen(out), "eventfd %llu ", (unsigned long long)count);
            int w = got[1];
            /* The pipe's write end goes on writing into the same pipe. */
            if (write(w, "w", 1) == 1 && pr >= 0)
                text_of(pr, 1, out);
        }
        receive(dsock, 100, got, out);
        receive(dsock, 100, got, out);
    }
    printf("%s\n", out);
    return 0;
}
