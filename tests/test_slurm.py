"""The SLURM path against a real single-node SLURM cluster started here for the tests.

The module fixture starts munged, slurmctld and slurmd (Debian's slurm-wlm and munge) as root in
a temporary folder, with their own key, socket and free ports, so that nothing of the machine's
own configuration is used or changed, and stops them at the end. Without root or without the
binaries (``make system-deps`` installs them as root) the tests are skipped with the reason.

The jobs are the project's own scripts: slurm/train.sbatch (a preempted job checkpoints, is
requeued and resumes; two tasks train with DDP), Hydra's submitit launcher (hydra/launcher=slurm)
and slurm/evaluate.sbatch as a job array whose merged tables equal a single-process run.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT
from tests.test_resume import LEAN_CALLBACKS
from tests.test_train import SHRINK

DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
# A requeued job may start again cred_expire seconds after it ended (SLURM's default 120 s would
# make the preemption test take minutes); the scheduler passes every second (bf_interval,
# sched_interval) start it right then: submit -> running ~1 s, requeue -> running ~6 s, measured.
CRED_EXPIRE_S = 5
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}
TINY_TRAIN = [  # plus a logger choice
    *SHRINK,
    *LEAN_CALLBACKS,
    "data.frames=2",
    "data.val_frames=2",
]


def skip_reason() -> str | None:
    """Why a local SLURM cluster cannot be started here, or None."""
    if os.geteuid() != 0:
        return "starting munged/slurmctld/slurmd needs root (CI runs as root)"
    missing = [p for p in DAEMONS if not os.access(p, os.X_OK)]
    missing += [c for c in (*CLIENTS, "runuser") if shutil.which(c) is None]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing): run `make system-deps` as root"
    try:
        import pwd

        pwd.getpwnam("munge")
    except KeyError:
        return "the munge user does not exist (install the munge package)"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


SLURM_CONF = """\
ClusterName=nvctest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket,cred_expire={cred_expire}
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=1,sched_min_interval=100000
ReturnToService=2
JobRequeue=1
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=600
KillWait=10
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class LocalSlurm:
    """A running single-node cluster: its folder, the environment that points clients at it."""

    root: Path
    env: dict[str, str]
    cpus: int
    start_s: float = 0.0
    pids: list[int] = field(default_factory=list)

    def run(self, *args: str, check: bool = True, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(args), env=self.env, cwd=cwd, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def sbatch(self, *args: str) -> str:
        return self.run("sbatch", "--parsable", *args).stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, ...)."""
        text = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def wait(self, job_id: str, timeout_s: float = 300) -> dict[str, str]:
        """Wait until the job (every task, for an array) is in a final state; return its record."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            records = [
                dict(re.findall(r"(\w+)=(\S*)", line))
                for line in self.run("scontrol", "show", "job", "-o", job_id).stdout.splitlines()
            ]
            if records and all(r.get("JobState") in FINAL_STATES for r in records):
                return records[0]
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} not done in {timeout_s} s: {self.job(job_id)}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((self.root / "log").glob("*.log"))
        )


def start_cluster(root: Path) -> LocalSlurm:
    """munged, slurmctld and slurmd in ``root``; returns once the node is idle."""
    started = time.perf_counter()
    for sub in ("state", "spool", "log", "munge"):
        (root / sub).mkdir()
    root.chmod(0o755)  # munged (user munge) checks every folder above its socket
    munge_dir = root / "munge"
    key = munge_dir / "munge.key"
    key.write_bytes(os.urandom(1024))  # a private key: never the machine's /etc/munge/munge.key
    key.chmod(0o600)
    shutil.chown(munge_dir, "munge", "munge")
    shutil.chown(key, "munge", "munge")
    subprocess.run(
        ["runuser", "-u", "munge", "--", DAEMONS[0], f"--socket={munge_dir}/munge.socket",
         f"--key-file={key}", f"--pid-file={munge_dir}/munged.pid", f"--log-file={munge_dir}/munged.log",
         f"--seed-file={munge_dir}/munged.seed"],
        check=True, timeout=30,
    )  # fmt: skip
    cpus = os.cpu_count() or 1
    node = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            node=node,
            root=root,
            cpus=cpus,
            ctld_port=free_port(),
            slurmd_port=free_port(),
            cred_expire=CRED_EXPIRE_S,
        )  # fmt: skip
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env.update(SLURM_CONF=str(conf), WANDB_MODE="offline", PYTHONUNBUFFERED="1")
    cluster = LocalSlurm(root, env, cpus)
    for daemon in DAEMONS[1:]:
        subprocess.run([daemon, "-f", str(conf)], env=env, check=True, timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
        if state == "idle":
            cluster.start_s = time.perf_counter() - started
            return cluster
        time.sleep(0.05)
    raise RuntimeError(f"the local SLURM node did not become idle (sinfo: {state!r})\n{cluster.logs()}")


def stop_cluster(root: Path, env: dict[str, str]) -> None:
    """Cancel every job, then stop slurmd, slurmctld and munged (pid files), waiting for each."""
    if (root / "slurm.conf").is_file() and (root / "slurmctld.pid").is_file():
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(["scancel", "--full", "--user=root"], env=env, capture_output=True, timeout=15)
    pids = []
    for pid_file in (root / "slurmd.pid", root / "slurmctld.pid", root / "munge" / "munged.pid"):
        if pid_file.is_file():
            pid = int(pid_file.read_text().split()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
    deadline = time.monotonic() + 10  # then SIGKILL: the cluster's state is thrown away anyway
    for pid in pids:
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def slurm() -> Iterator[LocalSlurm]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="nvc-slurm-"))
    env: dict[str, str] = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    try:
        cluster = start_cluster(root)
        env = cluster.env
        print(f"local SLURM cluster up in {cluster.start_s:.2f} s ({root})")
        yield cluster
    finally:
        stop_cluster(root, env)
        shutil.rmtree(root, ignore_errors=True)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def wait_for_checkpoint(path: Path, min_step: int, slurm: LocalSlurm, job_id: str, timeout_s: float = 300):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file():
            try:
                if load(path)["global_step"] >= min_step:
                    return
            except (RuntimeError, EOFError, KeyError):
                pass  # being written
        state = slurm.job(job_id).get("JobState")
        assert state in ("PENDING", "RUNNING", "CONFIGURING"), f"job {job_id} is {state}"
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at step {min_step} in {timeout_s} s")


# --------------------------------------------------------------------------------------------------


def test_cluster_runs_a_job(slurm: LocalSlurm, tmp_path: Path) -> None:
    out = tmp_path / "hello.out"
    job = slurm.sbatch(f"--output={out}", "--wrap", "srun hostname")
    assert slurm.wait(job, timeout_s=60)["JobState"] == "COMPLETED"
    assert out.read_text().strip() == socket.gethostname().split(".")[0]


@pytest.mark.slow
def test_preempted_training_job_checkpoints_requeues_and_resumes(slurm: LocalSlurm, tmp_path: Path) -> None:
    """SIGUSR1 (as 90 s before the time limit): Lightning saves hpc_ckpt_1 and requeues; the
    requeue's SIGTERM saves hpc_ckpt_2 at the end of the step; the job runs again in the same run
    folder and resumes from the furthest checkpoint with the same global step, then finishes."""
    run_dir, max_steps, val_every = tmp_path / "run", 30, 5
    out = tmp_path / "train.out"
    job = slurm.sbatch(
        "--cpus-per-task=1",
        f"--output={out}",
        "slurm/train.sbatch",
        *TINY_TRAIN,
        "logger=csv",
        f"trainer.max_steps={max_steps}",
        f"trainer.val_check_interval={val_every}",
        f"hydra.run.dir={run_dir}",
    )
    wait_for_checkpoint(run_dir / "checkpoints" / "last.ckpt", val_every, slurm, job)
    preempted = time.perf_counter()
    slurm.run("scancel", "--signal=USR1", job)
    record = slurm.wait(job, timeout_s=300)
    log = out.read_text()
    assert record["JobState"] == "COMPLETED", log[-4000:]
    assert record["Restarts"] == "1", record
    assert "Handling auto-requeue signal" in log and "(restart 1) on" in log

    hpc = sorted(run_dir.glob("hpc_ckpt_*.ckpt"))
    assert hpc, "no requeue checkpoint"
    resumed_from = max(hpc, key=lambda p: (load(p)["global_step"], p.stat().st_mtime_ns))
    step_at_preemption = load(resumed_from)["global_step"]
    assert val_every <= step_at_preemption < max_steps
    assert f"resuming from {resumed_from}" in log
    final = load(run_dir / "checkpoints" / "last.ckpt")
    assert final["global_step"] == max_steps
    adam = {float(s["step"]) for s in final["optimizer_states"][0]["state"].values()}
    assert adam == {float(max_steps)}, "the optimizer state went through the requeue"

    versions = sorted((run_dir / "csv").glob("version_*"))
    assert len(versions) == 2
    with (versions[1] / "metrics.csv").open() as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle) if row.get("train/loss")]
    assert min(steps) == step_at_preemption, "the requeued run continues at the checkpoint's step"
    took = time.perf_counter() - preempted
    print(f"SIGUSR1 at step {step_at_preemption} -> requeued, resumed and finished in {took:.1f} s")


@pytest.mark.slow
def test_two_task_ddp_job(slurm: LocalSlurm, tmp_path: Path) -> None:
    """One task per device: two srun tasks, Lightning's SLURMEnvironment ranks them, gloo on the CPU."""
    if slurm.cpus < 2:
        pytest.skip("needs 2 CPUs for two tasks")
    run_dir, out = tmp_path / "run", tmp_path / "ddp.out"
    job = slurm.sbatch(
        "--ntasks-per-node=2",
        "--cpus-per-task=1",
        f"--output={out}",
        "slurm/train.sbatch",
        *TINY_TRAIN,
        "logger=[csv,wandb]",  # W&B offline (WANDB_MODE=offline, as on nodes without internet)
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.num_sanity_val_steps=0",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        f"hydra.run.dir={run_dir}",
    )
    record = slurm.wait(job, timeout_s=300)
    log = out.read_text()
    assert record["JobState"] == "COMPLETED", log[-4000:]
    assert "trainer.devices=2 trainer.num_nodes=1" in log  # the script matched the allocation
    assert re.search(r"GLOBAL_RANK: 1, MEMBER: 2/2", log), "Lightning saw two SLURM tasks"
    config = load(run_dir / "checkpoints" / "last.ckpt")
    assert config["global_step"] == 2
    assert config["nvc_config"]["trainer"]["devices"] == 2
    # One offline W&B run (rank 0's), for `wandb sync <run dir>/wandb/offline-run-*` from a login node.
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and any(offline[0].glob("*.wandb")), offline
    # The upload step, without uploading (no key, no network here): wandb lists the run it would sync.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    wandb_cli = Path(sys.executable).with_name("wandb")
    sync = subprocess.run(
        [str(wandb_cli), "sync", "--dry-run", str(offline[0])],
        env={**env, "NETRC": str(tmp_path / "no_netrc")}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert sync.returncode == 0 and "Would sync 1 run" in sync.stdout + sync.stderr, sync.stderr


@pytest.mark.slow
def test_submitit_sweep_on_slurm(slurm: LocalSlurm, tmp_path: Path) -> None:
    """``train.py -m hydra/launcher=slurm``: a 2-point sweep as a SLURM job array."""
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable, "train.py", "-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.timeout_min=10", *TINY_TRAIN, "logger=csv", "trainer.max_steps=2",
            "trainer.val_check_interval=2", "module.lambda_min=117,200", f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=REPO_ROOT, env=slurm.env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lambdas = set()
    for point in ("0", "1"):
        checkpoint = load(sweep_dir / point / "checkpoints" / "last.ckpt")
        assert checkpoint["global_step"] == 2
        lambdas.add(checkpoint["nvc_config"]["module"]["lambda_min"])
    assert lambdas == {117.0, 200.0}
    job_folders = [p.name for p in (sweep_dir / ".submitit").iterdir()]
    array_ids = {name.split("_")[0] for name in job_folders if re.fullmatch(r"\d+_\d", name)}
    assert len(array_ids) == 1 and len(job_folders) >= 2, job_folders  # one array, one task per point


def read_table(path: Path, key: tuple[str, ...]) -> dict[tuple[str, ...], dict[str, str]]:
    with path.open() as handle:
        return {tuple(row[k] for k in key): row for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_evaluation_arrays_equal_single_process(slurm: LocalSlurm, tmp_path: Path) -> None:
    """``sbatch --array`` of evaluate.sbatch, and the same shards as a submitit sweep: each array
    task codes its shard, shard 0 merges; the tables equal a single-process run's."""
    small = [
        "frames=2", "metrics=[psnr]", "bd_metrics=[psnr_yuv]", "progress=false",
        "~ctc.test_sets.embedded.sequences.coffee_zoom", "~ctc.test_sets.embedded.sequences.rocket_tilt",
    ]  # fmt: skip
    array_dir, single_dir = tmp_path / "array", tmp_path / "single"
    job = slurm.sbatch(
        "--array=0-1",
        "--ntasks=1",
        "--cpus-per-task=1",
        f"--output={tmp_path}/eval-%a.out",
        "slurm/evaluate.sbatch",
        *small,
        f"hydra.run.dir={array_dir}",
    )
    record = slurm.wait(job, timeout_s=300)
    outputs = "\n".join(p.read_text()[-2000:] for p in tmp_path.glob("eval-*.out"))
    assert record["JobState"] == "COMPLETED", outputs
    # Task 1 coded its shard and left; task 0 waited for it and wrote the tables. (Were the array
    # ignored, each task would be rank 0 of 1, code every point and write the tables.)
    assert "results in" in (tmp_path / "eval-0.out").read_text()
    assert "results in" not in (tmp_path / "eval-1.out").read_text()
    single = subprocess.run(
        [sys.executable, "evaluate.py", *small, f"hydra.run.dir={single_dir}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]

    # The same shards as a Hydra sweep through the submitit launcher (one array task per shard).
    submitit_dir = tmp_path / "submitit"
    sweep = subprocess.run(
        [
            sys.executable, "evaluate.py", "-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
            *small, "shard.rank=range(0,2)", "shard.world_size=2", f"run_dir={submitit_dir}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=REPO_ROOT, env=slurm.env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]

    key = ("codec", "sequence", "rate_point")
    reference = read_table(single_dir / "points.csv", key)
    assert len(reference) == 16
    bd_key = ("class", "metric", "method")
    for sharded_dir in (array_dir, submitit_dir):
        merged = read_table(sharded_dir / "points.csv", key)
        assert merged.keys() == reference.keys(), sharded_dir.name
        for point, row in merged.items():
            assert row["bits"] == reference[point]["bits"], (sharded_dir.name, point)
            assert row["psnr_yuv"] == reference[point]["psnr_yuv"], (sharded_dir.name, point)
        bdrate = read_table(sharded_dir / "bdrate.csv", bd_key)
        assert bdrate == read_table(single_dir / "bdrate.csv", bd_key), sharded_dir.name


def test_shard_ranks_from_slurm_arrays_and_tasks(monkeypatch) -> None:
    """Array index x tasks per job + task rank; torchrun's RANK wins; submitit's arrays are sweeps."""
    from nvc_train.evaluation.runner import Shard

    for key in list(os.environ):
        if key.startswith(("SLURM_", "SUBMITIT_")) or key in ("RANK", "WORLD_SIZE"):
            monkeypatch.delenv(key)
    assert Shard.from_env() == Shard(0, 1)
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert Shard.from_env() == Shard(1, 2)
    # --array=3-9:3 (tasks 3, 6, 9) of 2-task jobs: task 6 is the array's second job.
    array = {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_STEP": "3"}
    for key, value in {**array, "SLURM_ARRAY_TASK_COUNT": "3"}.items():
        monkeypatch.setenv(key, value)
    assert Shard.from_env() == Shard(3, 6)
    assert Shard.from_env(rank=0, world_size=1) == Shard(0, 1)  # the config's shard.* wins
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert Shard.from_env() == Shard(1, 2)
    monkeypatch.delenv("SUBMITIT_EXECUTOR")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert Shard.from_env() == Shard(0, 4)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="outside world size"):
        Shard.from_env()
