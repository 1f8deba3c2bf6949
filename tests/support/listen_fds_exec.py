"""exec wrapper: ``listen_fds_exec.py FD,FD,... [NAME=pid ...] -- PROGRAM ARGS...``

Moves the inherited descriptors to 3, 4, ... (sd_listen_fds(3)'s SD_LISTEN_FDS_START),
sets LISTEN_FDS and LISTEN_PID (this process's pid, which exec keeps), and execs PROGRAM:
what systemd does between fork and exec. LISTEN_FDNAMES comes from the environment.
``NAME=pid`` sets another variable to the pid too (systemd's WATCHDOG_PID). With no
descriptors (an empty first argument) no LISTEN_* variable is set.
"""

import fcntl
import os
import sys


def main() -> None:
    fds = [int(fd) for fd in sys.argv[1].split(",") if fd]
    split = sys.argv.index("--")
    pid_names = [arg.removesuffix("=pid") for arg in sys.argv[2:split]]
    argv = sys.argv[split + 1 :]
    # Copy out of the way first, so moving one descriptor cannot clobber another.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 3 + len(fds)) for fd in fds]
    for fd in fds:
        os.close(fd)
    for index, fd in enumerate(high):
        target = 3 + index
        os.dup2(fd, target, inheritable=True)
        os.close(fd)
    if fds:
        os.environ["LISTEN_FDS"] = str(len(fds))
        os.environ["LISTEN_PID"] = str(os.getpid())
    for name in pid_names:
        os.environ[name] = str(os.getpid())
    os.execvp(argv[0], argv)


main()
