"""`make image-test`: build the container image, then play one /start and one /act with the image's own bot.

Not part of `make test` (a build takes about a minute). Steps:
  1. find a container engine that works: podman, else docker; with neither, say so and exit 0;
  2. build the Dockerfile (podman: ``--isolation chroot`` and the host's CA bundle, which is what works in
     sandboxes without an OCI runtime; ``--format docker`` so that HEALTHCHECK is kept);
  3. start a local Discord stand-in and a local LLM server (llmock) on this machine;
  4. run the image's bot as the image's non-root user, with the image's ENV and WORKDIR, and a fresh
     directory as its data volume: podman's ``image mount`` + ``chroot --userspec`` (``podman run`` needs cgroups,
     which sandboxes often lack), or ``docker run --network host``;
  5. /start and /act as a player; check the answers, /healthz and ``dungeon-master health`` (the HEALTHCHECK),
     /metrics, and that the database landed on the data volume, owned by the image's user.
Exit status 0 = the image works (or no engine), 1 = it does not. Prints how long each step took.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TAG = os.environ.get("IMAGE_TAG", "localhost/dungeon-master:image-test")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
OPENING = "The lighthouse keeper waves you in from the storm. What do you do?"
ANSWER = "The stairs creak as you climb towards the lamp room."


def say(message: str) -> None:
    print(f"image-test: {message}", flush=True)


def engine() -> str | None:
    for name in ("podman", "docker"):
        if shutil.which(name) and subprocess.run([name, "info"], capture_output=True, timeout=60).returncode == 0:
            return name
    return None


def build(name: str) -> None:
    command = [name, "build", "--format", "docker", "--isolation", "chroot", "--pull=missing"] if name == "podman" \
        else [name, "build"]
    if name == "podman" and CA_BUNDLE.is_file():
        command += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    command += ["-t", TAG, str(ROOT)]
    say(" ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n", file=sys.stderr)
        raise SystemExit("image-test: the build failed (no base image? here, ../shared/tools/container-base.sh "
                         "imports one)")


def image_config(name: str) -> dict[str, Any]:
    out = subprocess.run([name, "image", "inspect", "--format", "{{json .Config}}", TAG], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user_ids(root: Path, user: str) -> tuple[int, int, str]:
    """The image's USER as uid, gid and home, from the image's own /etc/passwd."""
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if user in (fields[0], fields[2]):
            return int(fields[2]), int(fields[3]), fields[5]
    raise SystemExit(f"image-test: user {user!r} is not in the image's /etc/passwd")


class ImageBot:
    """The image's CMD as its USER, with its ENV and WORKDIR plus ``env``, and ``data`` as its /app/data."""

    def __init__(self, name: str, config: dict[str, Any], env: dict[str, str], data: Path) -> None:
        self.name, self.config, self.env, self.data = name, config, env, data
        self.root: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.volume = next(iter(config.get("Volumes") or {"/app/data": {}}))
        self.uid = self.gid = 0
        self.log = data.parent / "bot.log"

    def start(self) -> None:
        env = dict(item.split("=", 1) for item in self.config.get("Env") or [])
        env.update(self.env)
        command = self.config.get("Cmd") or ["dungeon-master", "run"]
        workdir = self.config.get("WorkingDir") or "/"
        log = self.log.open("wb")
        if self.name == "podman":
            self.root = Path(subprocess.run(["podman", "image", "mount", TAG], capture_output=True, text=True,
                                            check=True).stdout.strip())
            self.uid, self.gid, home = user_ids(self.root, self.config.get("User") or "root")
            os.chown(self.data, self.uid, self.gid)
            subprocess.run(["mount", "--bind", str(self.data), str(self.root / self.volume.lstrip("/"))], check=True)
            env.setdefault("HOME", home)
            inner = f"cd {workdir} && exec " + " ".join(command)
            self.proc = subprocess.Popen(
                ["chroot", f"--userspec={self.uid}:{self.gid}", str(self.root), "/usr/bin/env", "-i",
                 *(f"{k}={v}" for k, v in env.items()), "/bin/sh", "-c", inner], stdout=log, stderr=log)
        else:
            self.uid = self.gid = -1  # docker: whatever the image's USER maps to
            args = [f"-e{k}={v}" for k, v in self.env.items()]
            self.proc = subprocess.Popen(["docker", "run", "--rm", "--network", "host", "--name", "dm-image-test",
                                          "-v", f"{self.data}:{self.volume}", *args, TAG], stdout=log, stderr=log)

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        """A command inside the image, as its user, with its ENV (what HEALTHCHECK runs)."""
        env = dict(item.split("=", 1) for item in self.config.get("Env") or [])
        env.update(self.env)
        if self.name == "podman":
            assert self.root is not None
            return subprocess.run(["chroot", f"--userspec={self.uid}:{self.gid}", str(self.root), "/usr/bin/env",
                                   "-i", *(f"{k}={v}" for k, v in env.items()), "/bin/sh", "-c",
                                   f"cd {self.config.get('WorkingDir') or '/'} && " + " ".join(command)],
                                  capture_output=True, text=True, timeout=30)
        return subprocess.run(["docker", "exec", "dm-image-test", *command], capture_output=True, text=True,
                              timeout=30)

    def stop(self) -> str:
        if self.proc is not None and self.proc.poll() is None:
            if self.name == "podman":
                self.proc.send_signal(signal.SIGINT)  # chroot, env and sh exec: this is the bot's own pid
            else:
                subprocess.run(["docker", "stop", "dm-image-test"], capture_output=True)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.root is not None:
            subprocess.run(["umount", str(self.root / self.volume.lstrip("/"))], capture_output=True)
            subprocess.run(["podman", "image", "unmount", TAG], capture_output=True)
            self.root = None
        return self.log.read_text(errors="replace") if self.log.exists() else ""


async def play(bot: ImageBot, standin: Any, llmock: Any, metrics_port: int) -> None:
    import aiohttp

    from tests.discord.conftest import GENERAL, PLAYER
    from tests.e2e.botproc import settled

    async def get(path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{metrics_port}{path}") as r:
            return r.status, await r.text()

    await standin.wait_ready(timeout=60)
    await standin.wait_for_commands("start", "act", "config", "usage", timeout=60)
    start = await standin.invoke("start", {"premise": "a lighthouse in a storm"}, channel_id=GENERAL,
                                 user_id=PLAYER)
    [opening] = await settled(standin, start, timeout=60)
    assert opening.content == OPENING, opening.content
    act = await standin.invoke("act", {"action": "I climb the stairs"}, channel_id=GENERAL, user_id=PLAYER)
    [answer] = await settled(standin, act, timeout=60)
    assert answer.content == ANSWER, answer.content
    say("/start and /act answered by the image's bot")
    health = await get("/healthz")
    assert health == (200, "ok\n"), health
    check = await asyncio.to_thread(bot.exec, "dungeon-master", "health")
    assert check.returncode == 0, (check.stdout, check.stderr)
    status, text = await get("/metrics")
    assert status == 200 and 'dm_turns_total{outcome="done"} 2.0' in text, text[:2000]
    say("/healthz is 200, `dungeon-master health` (the HEALTHCHECK) passes, /metrics counts both turns")


async def main() -> int:
    name = engine()
    if name is None:
        say("neither podman nor docker works on this machine; nothing to test (exit 0)")
        return 0
    began = time.monotonic()
    build(name)
    built = time.monotonic()
    say(f"built {TAG} with {name} in {built - began:.0f} s")
    config = image_config(name)
    assert config.get("User") not in (None, "", "root", "0"), "the image runs as root"

    from llmock.pytest_plugin import LLMock
    from llmock.testing import LLMockServer

    from tests.discord.conftest import APP_ID, BOT_ID, TOKEN, guild_spec
    from tests.standin import DiscordStandIn

    standin = await DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN,
                                   guilds=[guild_spec()]).start()
    work = Path(tempfile.mkdtemp(prefix="dm-image-test-"))
    data = work / "data"
    data.mkdir()
    metrics_port = free_port()
    with LLMockServer() as server:
        llmock = LLMock(server).reset()
        llmock.tool_mode("off")
        llmock.reply(OPENING).reply(ANSWER)
        bot = ImageBot(name, config, {
            "DISCORD_TOKEN": TOKEN,
            "DM_DISCORD_API_BASE_URL": standin.api_base_url, "DM_DISCORD_GATEWAY_URL": standin.gateway_url,
            "DM_DISCORD_EDIT_INTERVAL_SECONDS": "0.5",
            "DM_LLM_PROVIDER": "openai", "DM_LLM_MODEL": "gpt-4o-mini", "DM_LLM_BASE_URL": llmock.base_url("openai"),
            "DM_METRICS_PORT": str(metrics_port),
        }, data)
        output = ""
        try:
            bot.start()
            await play(bot, standin, llmock, metrics_port)
        except (AssertionError, TimeoutError) as failure:
            output = bot.stop()
            print(output[-6000:], file=sys.stderr)
            say(f"FAILED: {failure!r}")
            return 1
        finally:
            output = output or bot.stop()
            await standin.stop()
    assert "Traceback" not in output, output[-6000:]
    database = data / "dungeon-master.db"
    assert database.is_file(), f"no database on the data volume: {sorted(p.name for p in data.iterdir())}"
    if bot.uid >= 0:
        owner = database.stat()
        assert (owner.st_uid, owner.st_gid) == (bot.uid, bot.gid), "the database is not the image user's"
    with sqlite3.connect(database) as db:
        turns = db.execute("SELECT role FROM turns WHERE status = 'complete' ORDER BY seq").fetchall()
    assert turns == [("dm",), ("player",), ("dm",)], turns
    say(f"the database is on the data volume ({bot.volume}/{database.name}, uid {bot.uid}) with the 3 turns")
    say(f"passed in {time.monotonic() - began:.0f} s (build {built - began:.0f} s, run "
        f"{time.monotonic() - built:.0f} s)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
