/* A vfork parent waiting for its child, which has neither run another program nor exited:
 * the parent is in an uninterruptible wait no tracer can stop. Prints READY (from the
 * child), the child waits for a line and exits, and the parent then prints VFORK OVER. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
    pid_t kid = vfork();
    if (kid == 0) {
        char line[16];
        /* Only system calls in a vfork child: it runs on its parent's memory. */
        write(1, "READY\n", 6);
        read(0, line, sizeof line);
        _exit(0);
    }
    printf("VFORK OVER (%s)\n", kid > 0 ? "child ran" : "no child");
    return 0;
}
