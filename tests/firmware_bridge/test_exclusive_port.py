"""The controller holds the serial port exclusively: TIOCEXCL makes the kernel refuse any
other open(2) of the tty (EBUSY), and pyserial's flock refuses the openers that the kernel
lets through (root, with CAP_SYS_ADMIN, is exempt from TIOCEXCL). The tests run as root, so
the kernel's refusal is tested the way it binds: from a child that drops to user nobody."""
from __future__ import annotations

import errno
import fcntl
import os
import pwd
import subprocess
import sys

import pytest

from firmware_bridge.errors import PortBusy
from firmware_bridge.link import close_exclusive, open_exclusive


def _as_nobody(fn) -> str:
    """Run fn() in a forked child as user nobody (when we are root); its str() result."""
    nobody = pwd.getpwnam("nobody")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                        # the child: only syscalls, then exit
        out = "child failed"
        try:
            os.close(r)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
            out = str(fn())
        except BaseException as e:                      # reported to the parent, never raised
            out = f"{type(e).__name__}: {e}"
        finally:
            os.write(w, out.encode()[:4000])
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def _raw_open(path: str):
    def run() -> str:
        try:
            os.close(os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK))
            return "opened"
        except OSError as e:
            return errno.errorcode.get(e.errno, str(e.errno))
    return run


@pytest.fixture
def tty(sim) -> str:
    os.chmod(sim.path, 0o666)          # so that nobody may open it at all, TIOCEXCL aside
    return sim.path


def test_another_user_cannot_open_the_tty_while_the_board_holds_it(tty, make_board):
    assert _as_nobody(_raw_open(tty)) == "opened"       # the control: nobody may open it
    board = make_board(tty)
    board.open()
    assert _as_nobody(_raw_open(tty)) == "EBUSY"
    board.close()                                        # TIOCEXCL is released on close
    assert _as_nobody(_raw_open(tty)) == "opened"


def test_another_users_diag_gets_port_busy_naming_the_port_and_whom_to_stop(tty, make_board):
    make_board(tty).open()

    def diag_open() -> str:
        try:
            open_exclusive(tty)
            return "opened"
        except PortBusy as e:
            return f"PortBusy errno={e.__cause__.errno}: {e}"
    text = _as_nobody(diag_open)
    assert text.startswith(f"PortBusy errno={errno.EBUSY}: Serial port {tty} is in use"), text
    assert "stop the cabinet controller" in text


def test_the_flock_still_refuses_a_root_opener(tty, make_board):
    make_board(tty).open()
    fd = os.open(tty, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)  # root passes TIOCEXCL...
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)      # ...but not the flock
    finally:
        os.close(fd)
    with pytest.raises(PortBusy, match=f"Serial port {tty} is in use"):
        open_exclusive(tty)


def test_port_busy_names_the_process_that_holds_the_port(tty):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from firmware_bridge.link import open_exclusive; "
         "p = open_exclusive(sys.argv[1]); print('held', flush=True); sys.stdin.read()", tty],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PortBusy) as info:
            open_exclusive(tty)
        assert f"pid {holder.pid} (" in str(info.value) and "-c import sys" in str(info.value)
        assert info.value.holders and info.value.port == tty
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    port = open_exclusive(tty)                           # the holder's flock went with it
    close_exclusive(port)


def test_a_killed_holder_leaves_the_port_free_as_a_usb_tty_would(make_sim, wait_for):
    """The kernel drops TIOCEXCL with a USB tty's last file; the simulated board keeps its
    pty slave open, so it drops the flag itself once the host is quiet and gone."""
    sim = make_sim()
    os.chmod(sim.path, 0o666)
    holder = subprocess.run(
        [sys.executable, "-c", "import os, signal, sys; from firmware_bridge.device import Board; "
         "Board(sys.argv[1], reconnect=False, host_timeout_s=0.3).open(); "
         "os.kill(os.getpid(), signal.SIGKILL)",
         sim.path], capture_output=True, text=True, timeout=30)
    assert holder.returncode == -9, holder.stderr
    wait_for(lambda: _as_nobody(_raw_open(sim.path)) == "opened", 5,
             "the killed controller's exclusive hold to go")
