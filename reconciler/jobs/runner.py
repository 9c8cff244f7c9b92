"""Run one scheduled job now: backup, restore drill or copy, each as a list of steps that fail loudly.

Called by the scheduler (``reconciler.jobs.schedule``) and ``reconciler jobs run``. Every run holds the
environment's project lock, so it never overlaps a deploy or another job of the same environment.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from reconciler import labels as L
from reconciler.config.model import Config, EnvConfig
from reconciler.errors import ConfigError, ReconcilerError
from reconciler.jobs.model import DEFAULT_READY, JobConfig, JobKind, JobResult, dump_filename, snapshot_tag
from reconciler.jobs.oneoff import Docker, Finished
from reconciler.jobs.restic import JobError, Restic, read_stream
from reconciler.names import branch_slug

_CHUNK = 256 * 1024
# The host (a name of ``hosts:``) of the environment whose job this thread is running.
_HOST: contextvars.ContextVar[str] = contextvars.ContextVar("job_host", default="local")
_READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class JobOutcome:
    """What a run gave: the result, a message for users, and the dump's size for backups."""

    result: JobResult
    message: str
    size: int | None = None


def project_of(env: EnvConfig) -> str:
    """Jobs belong to environments that follow one branch: their project name is fixed."""
    if env.branch is None:
        raise ConfigError(f"jobs need an environment with `branch`, not `branches` ({env.key})")
    return env.project_for(branch_slug(env.branch))


def source_of(config: Config, env: EnvConfig, job: JobConfig) -> tuple[EnvConfig, JobConfig]:
    """The backup job a drill or copy reads: `from: JOB` (same environment) or `ENVIRONMENT/JOB`."""
    assert job.source is not None
    env_name, _, job_name = job.source.rpartition("/")
    src_env = config.app(env.app).environment(env_name) if env_name else env
    return src_env, next(j for j in src_env.jobs if j.name == job_name)


class JobRunner:
    """Runs jobs of one configuration against the Docker Engine and the restic repository."""

    def __init__(
        self,
        config: Config,
        *,
        docker: Docker | None = None,
        restic: Restic | None = None,
        lock: Callable[[str], object] | None = None,
    ) -> None:
        if config.backups is None:
            raise ConfigError("jobs need the top-level `backups` repository", hint="see docs/environments.md")
        self.config = config
        self._docker = docker  # a given adapter serves every host (tests)
        self._dockers: dict[str, Docker] = {}
        self.restic = restic or Restic(config.backups)
        self._lock = lock

    @property
    def docker(self) -> Docker:
        """The adapter of the engine the running job's environment is on."""
        if self._docker is not None:
            return self._docker
        host = _HOST.get()
        if host not in self._dockers:
            self._dockers[host] = Docker(host=self.config.hosts[host], state_dir=self.config.state_dir)
        return self._dockers[host]

    def run(self, env: EnvConfig, job: JobConfig) -> JobOutcome:
        """Run ``job`` of ``env`` under its project lock; a failure is an outcome, never an exception."""
        from reconciler.daemon.instance import project_lock

        project = project_of(env)
        lock = self._lock(project) if self._lock else project_lock(project)
        _HOST.set(env.host)  # the job's one-offs and scratch servers run on its environment's engine
        try:
            with lock:  # type: ignore[attr-defined]
                if job.kind == JobKind.BACKUP:
                    return self._backup(env, project, job)
                if job.kind == JobKind.RESTORE_DRILL:
                    return self._drill(env, project, job)
                return self._copy(env, project, job)
        except ReconcilerError as err:
            return JobOutcome(JobResult.FAILURE, f"{env.key} job {job.name!r}: {err}")

    def _labels(self, env: EnvConfig, job: JobConfig) -> dict[str, str]:
        return {L.MANAGED: "true", L.APP: env.app, L.ENVIRONMENT: env.name, L.JOB: f"{env.key}/{job.name}"}

    def _service(self, project: str, service: str) -> dict[str, object]:
        info = self.docker.service_container(project, service)
        if info is None:
            raise JobError(
                f"service {service!r} of project {project!r} has no container",
                hint="deploy the environment first; jobs run beside its running service",
            )
        return info

    # --- backup: dump | restic backup --stdin, then retention ---

    def _backup(self, env: EnvConfig, project: str, job: JobConfig) -> JobOutcome:
        info = self._service(project, job.service)
        self.restic.ensure_repository()
        tag, filename = snapshot_tag(env.app, env.name, job.name), dump_filename(env.app, env.name, job.name)
        previous = self.restic.latest_size(filename, tag)
        proc = self.restic.backup_process(filename, tag)
        assert proc.stdin is not None
        size = 0

        def sink(data: bytes) -> None:
            nonlocal size
            size += len(data)
            try:
                proc.stdin.write(data)  # type: ignore[union-attr]
            except BrokenPipeError:
                raise JobError("restic stopped reading the dump (see the next message of restic)") from None

        try:
            done = self.docker.oneoff(info, job.run, self._labels(env, job), stdin=None, stdout=sink)
            if done.exit_code != 0:
                raise JobError(f"the dump command exited with status {done.exit_code}: {done.tail()}")
            if size == 0:
                raise JobError("the dump is empty: no snapshot was kept", hint=f"check `run` ({job.run[0]})")
            if previous and size < previous * job.min_ratio:
                raise JobError(
                    f"the dump is {size} bytes, less than {job.min_ratio:.0%} of the previous one "
                    f"({previous} bytes): no snapshot was kept",
                    hint="if the data really shrank, lower `min_ratio` for one run (0 turns the check off)",
                )
        except BaseException:
            _abort(proc)
            raise
        out, err = proc.communicate()  # closes stdin: restic commits the snapshot
        if proc.returncode != 0:
            raise JobError(f"restic backup failed: {err.decode('utf-8', 'replace').strip()[-500:]}")
        snapshot = _snapshot_id(out)
        if job.keep_last or job.keep_within:
            self.restic.forget(tag, job.keep_last, job.keep_within)
        return JobOutcome(JobResult.SUCCESS, f"backed up {size} bytes to {filename} ({snapshot})", size=size)

    # --- restore drill: a scratch database, the latest dump on the restore's stdin, then verify ---

    def _drill(self, env: EnvConfig, project: str, job: JobConfig) -> JobOutcome:
        src_env, src_job = source_of(self.config, env, job)
        image = str(self._service(project, job.service)["Image"])
        cid = self.docker.start_scratch(image, self._labels(env, job))
        try:
            self._wait_ready(cid, job.ready or tuple(DEFAULT_READY.split()))
            size = self._restore(
                src_env,
                src_job,
                lambda chunks: self.docker.exec(cid, job.restore, stdin=chunks, stdout=_discard),
            )
            out = bytearray()
            done = self.docker.exec(cid, job.verify, stdin=None, stdout=out.extend)
            _check_verify(done, out.decode("utf-8", "replace"))
        finally:
            self.docker.remove(cid)
        return JobOutcome(JobResult.SUCCESS, f"restored {size} bytes and verified: {out.decode().strip()}")

    def _wait_ready(self, cid: str, ready: tuple[str, ...]) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        while True:
            done = self.docker.exec(cid, ready, stdin=None, stdout=_discard)
            if done.exit_code == 0:
                return
            if time.monotonic() > deadline:
                raise JobError(f"the scratch database was not ready after {_READY_TIMEOUT:g}s: {done.tail()}")
            time.sleep(0.5)

    def _restore(
        self, src_env: EnvConfig, src_job: JobConfig, run: Callable[[Iterator[bytes]], Finished]
    ) -> int:
        """Stream the latest dump of ``src_job`` into ``run``; fail on an unreadable or empty backup."""
        tag = snapshot_tag(src_env.app, src_env.name, src_job.name)
        filename = dump_filename(src_env.app, src_env.name, src_job.name)
        if not self.restic.snapshots(tag):
            raise JobError(f"no backup of {src_env.key}/{src_job.name} yet", hint="run the backup job first")
        proc = self.restic.dump_process(filename, tag)
        size = 0

        def chunks() -> Iterator[bytes]:
            nonlocal size
            assert proc.stdout is not None
            while data := proc.stdout.read(_CHUNK):
                size += len(data)
                yield data

        try:
            done = run(chunks())
        except BaseException:
            _abort(proc)
            raise
        if proc.stdout is not None:
            proc.stdout.read()
        err = read_stream(proc.stderr)
        if proc.wait() != 0:
            raise JobError(f"the backup cannot be read (restic dump failed): {err.strip()[-500:]}")
        if size == 0:
            raise JobError("the backup is empty")
        if done.exit_code != 0:
            raise JobError(f"the restore command exited with status {done.exit_code}: {done.tail()}")
        return size

    # --- copy: another environment's latest backup into this environment, then anonymise ---

    def _copy(self, env: EnvConfig, project: str, job: JobConfig) -> JobOutcome:
        src_env, src_job = source_of(self.config, env, job)
        info = self._service(project, job.service)
        labels = self._labels(env, job)
        try:
            size = self._restore(
                src_env,
                src_job,
                lambda chunks: self.docker.oneoff(info, job.restore, labels, stdin=chunks, stdout=_discard),
            )
            done = self.docker.oneoff(info, job.anonymize, labels, stdin=None, stdout=_discard)
            if done.exit_code != 0:
                raise JobError(f"anonymisation exited with status {done.exit_code}: {done.tail()}")
        except ReconcilerError as err:
            # The copied data must not stay un-anonymised: remove it before reporting the failure.
            reset = self.docker.oneoff(info, job.reset, labels, stdin=None, stdout=_discard)
            if reset.exit_code != 0:
                raise JobError(
                    f"{err.message}; THE RESET FAILED TOO (status {reset.exit_code}: {reset.tail()}): "
                    f"{env.key} may hold un-anonymised data from {src_env.key}",
                    hint="run the reset command by hand now",
                ) from err
            raise JobError(f"{err.message}; {env.key} was reset", hint=err.hint) from err
        return JobOutcome(JobResult.SUCCESS, f"copied {size} bytes from {src_env.key} and anonymised them")


def _snapshot_id(output: bytes) -> str:
    """The snapshot id from ``restic backup --json``'s summary line."""
    for line in reversed(output.decode("utf-8", "replace").splitlines()):
        with contextlib.suppress(ValueError, AttributeError):
            summary = json.loads(line)
            if summary.get("message_type") == "summary":
                return f"snapshot {str(summary.get('snapshot_id', ''))[:8]}"
    return "snapshot"


def _discard(_data: bytes) -> None:
    pass


def _check_verify(done: Finished, output: str) -> None:
    """The verify command passes when it exits 0 and, if it prints a number, that number is above 0."""
    if done.exit_code != 0:
        raise JobError(f"the verify command exited with status {done.exit_code}: {done.tail()}")
    text = output.strip()
    try:
        value = float(text)
    except ValueError:
        return
    if value <= 0:
        raise JobError(f"the verify command printed {text}: the restored database is empty")


def _abort(proc: subprocess.Popen[bytes]) -> None:
    """Stop restic without a snapshot: SIGINT makes it clean up its lock (SIGKILL would leave it)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
