"""Keystroke echo latency: one byte written to a terminal, time until it comes back.

Usage: latency.py N CMD... -- runs CMD on a fresh pty (our stand-in for the user's
terminal), waits for READY, then sends N single bytes and prints the median and the 95th
percentile round trip in microseconds.
"""
import os, pty, select, statistics, struct, sys, time, fcntl, termios

def main():
    n = int(sys.argv[1])
    cmd = sys.argv[2:]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(cmd[0], cmd)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    buf = b""
    deadline = time.time() + 20
    while b"READY" not in buf:
        r, _, _ = select.select([fd], [], [], 1)
        if r:
            buf += os.read(fd, 65536)
        if time.time() > deadline:
            sys.exit("latency.py: the program never said READY")
    time.sleep(0.2)
    while select.select([fd], [], [], 0.05)[0]:
        os.read(fd, 65536)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        os.write(fd, b"x")
        got = b""
        while b"x" not in got:
            r, _, _ = select.select([fd], [], [], 5)
            if not r:
                sys.exit("latency.py: no echo within 5 s")
            got += os.read(fd, 65536)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    print(f"{statistics.median(samples):.0f} {samples[int(len(samples) * 0.95)]:.0f}")
    os.kill(pid, 15)

main()
