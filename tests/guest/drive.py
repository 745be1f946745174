"""Drive crterm sessions through this machine's own ptys (run inside the guest of the
other-kernel test): for each case, `crterm resume IMAGE` in a new pty, then send keys and
wait for text in what the terminal receives. Prints `ok NAME` or `fail NAME: why` per case.

Usage: drive.py CASES.json, a list of {"name", "argv", "steps": [["send"|"expect"|"exit", text]]}
where "exit" waits for the program to end with that status.
"""
import json
import os
import pty
import select
import signal
import sys
import time

TIMEOUT = int(os.environ.get("TIMEOUT", "240"))  # seconds per step: emulated CPUs are slow


def run(case):
    name = case["name"]
    env = dict(os.environ, TERM="xterm", **case.get("env", {}))
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(case["argv"][0], case["argv"], env)
    # A terminal of 100x30.
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    seen = b""
    status = None

    def wait_for(text):
        nonlocal seen
        end = time.time() + TIMEOUT
        while time.time() < end:
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    return text.encode() in seen
                seen += data
            if text.encode() in seen:
                return True
        return False

    for action, arg in case["steps"]:
        if action == "send":
            time.sleep(0.5)
            os.write(fd, arg.encode())
        elif action == "expect":
            if not wait_for(arg):
                print(f"fail {name}: {arg!r} never came; the end of what came: {seen[-400:]!r}")
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return False
            seen = seen[seen.index(arg.encode()) + len(arg):]
        elif action == "exit":
            wait_for("\0never")  # read until the end
            _, st = os.waitpid(pid, 0)
            status = os.waitstatus_to_exitcode(st)
            if status != int(arg):
                print(f"fail {name}: exit status {status}, not {arg}; the end of what came: {seen[-400:]!r}")
                return False
    if status is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    print(f"ok {name}", flush=True)
    return True


def main():
    cases = json.load(open(sys.argv[1]))
    for case in cases:
        sys.stdout.flush()
        run(case)
    sys.stdout.flush()


main()
