"""irctest controller for pollchat (https://github.com/progval/irctest).

Kept in pollchat's repository, not in irctest's: `tests/irctest/run.sh` copies it into a
checkout of irctest as `irctest/controllers/pollchat.py` and runs the suite with
`--controller irctest.controllers.pollchat`.

pollchat takes everything on its command line, so there is no configuration file: the
controller maps what a test asks for onto flags. The binary is `$POLLCHAT_BIN`, or `pollchat`
on the PATH.
"""

import atexit
import functools
import os
import shutil
import subprocess
from typing import Optional, Set, Type

from irctest.basecontrollers import BaseServerController, DirectoryBasedController
from irctest.runner import NotImplementedByController
from irctest.specifications import Capabilities


# Every server this worker started. irctest stops a test's server in tearDown, which unittest
# skips when setUp raises: BotModeTestCase's setUp starts the server and then raises "ISUPPORT
# BOT not supported", leaving one server per test running after the suite. So a new test first
# stops any server an earlier test left, and the worker stops the last ones when it exits.
_started: "list[subprocess.Popen]" = []


def _stop_leftovers() -> None:
    for proc in _started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    _started.clear()


atexit.register(_stop_leftovers)


class PollchatController(BaseServerController, DirectoryBasedController):
    software_name = "pollchat"
    supported_sasl_mechanisms: Set[str] = set()
    supports_sts = False
    # What `CAP LS` offers; irctest skips the tests of capabilities not listed here.
    capabilities = frozenset(
        {
            Capabilities.ECHO_MESSAGE,
            Capabilities.MESSAGE_TAGS,
            Capabilities.MULTI_PREFIX,
            Capabilities.SERVER_TIME,
        }
    )

    def run(
        self,
        hostname: str,
        port: int,
        *,
        password: Optional[str],
        ssl: bool,
        run_services: bool,
        faketime: Optional[str],
        websocket_hostname: Optional[str],
        websocket_port: Optional[int],
    ) -> None:
        if ssl:
            raise NotImplementedByController("TLS")
        if run_services:
            raise NotImplementedByController("services")
        if websocket_hostname is not None or websocket_port is not None:
            raise NotImplementedByController("Websocket")
        assert self.proc is None
        _stop_leftovers()
        self.port = port
        self.hostname = hostname
        self.create_config()

        binary = os.environ.get("POLLCHAT_BIN") or shutil.which("pollchat")
        if not binary:
            raise RuntimeError("set POLLCHAT_BIN or put pollchat on the PATH")

        if faketime and shutil.which("faketime"):
            faketime_cmd = ["faketime", "-f", faketime]
            self.faketime_enabled = True
        else:
            faketime_cmd = []

        args = [
            *faketime_cmd,
            binary,
            "serve",
            "--irc-listen",
            f"{hostname}:{port}",
            # The line-protocol listener is always on; port 0 keeps it off irctest's ports.
            "--listen",
            "127.0.0.1:0",
            # The name irctest's tests expect as the source of numerics.
            "--server-name",
            "My.Little.Server",
            # …and the description of it that LINKS tests look for.
            "--server-description",
            "test server",
            # irctest connects many clients from 127.0.0.1 and sends commands back to back:
            # turn off the per-address connect rate, flood control and the wrong-password limit
            # so that no test is throttled or refused by a limit it is not about.
            "--max-connects-per-ip",
            "0",
            "--flood-rate",
            "0",
            "--irc-password-tries",
            "0",
            "--quiet",
        ]
        if password is not None:
            args += ["--irc-password", password]
        # irctest's server operator is `operuser` with the password `operpassword`; pollchat
        # takes only its hash, made once per run with `pollchat hash-password`.
        args += ["--oper", f"operuser:{oper_hash(binary)}"]
        self.proc = self.execute(args)
        _started.append(self.proc)


@functools.lru_cache(maxsize=None)
def oper_hash(binary: str) -> str:
    """The hash of irctest's operator password, as `pollchat hash-password` prints it."""
    out = subprocess.run(
        [binary, "hash-password"],
        input=b"operpassword\n",
        capture_output=True,
        check=True,
    )
    return out.stdout.decode().strip()


def get_irctest_controller_class() -> Type[PollchatController]:
    return PollchatController
