/* The program of the golden session image (tests/golden/session-v1.img): no libc, so
 * the image stays a few kilobytes. It says hello, blocks reading a line (where the
 * checkpoint finds it), echoes the line and exits. */
static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}

void _start(void) {
    static const char hello[] = "golden session: type a line\n";
    static const char bye[] = "golden session resumed: ";
    char buf[64];
    sys3(1, 1, (long)hello, sizeof hello - 1);
    long n = sys3(0, 0, (long)buf, sizeof buf);
    sys3(1, 1, (long)bye, sizeof bye - 1);
    if (n > 0) sys3(1, 1, (long)buf, n);
    sys3(60, 0, 0, 0);
}
