"""Ctrl-C: one line ``bayeslmm: interrupted``, status 130, within seconds, no worker left, no result.

Each command runs in its own session (``start_new_session``) and gets SIGINT the way a terminal
sends Ctrl-C, to the whole process group (workers included), or to the main process only. Before
the fix, PyMC caught the interrupt, ended the chain, sampled the next chain in full (19.7 s) and
reported one chain as a normal result (or, with ``--json``, died on the NaN r_hat); the bootstrap
and start-up printed long tracebacks. The Python API raises ``KeyboardInterrupt``; only with
``allow_partial=True`` does it return the draws so far, marked as partial.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

psutil = pytest.importorskip("psutil")
pytestmark = pytest.mark.skipif(not hasattr(os, "killpg"), reason="POSIX signals")

PIG = "weight ~ num_weeks + (1 | id_num)"
MESSAGE = "bayeslmm: interrupted"


def _cmd() -> list[str]:
    exe = Path(sys.executable).parent / "bayeslmm"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bayeslmm"]


class Interrupted:
    def __init__(self, code: int, out: str, err: str, secs: float, left: list[int]) -> None:
        self.code, self.out, self.err, self.secs, self.left = code, out, err, secs, left

    def check(self) -> None:
        """The behaviour every interrupted command must have."""
        assert self.code == 130, (self.code, self.err[-3000:])
        lines = self.err.strip().splitlines()
        assert lines and lines[-1] == MESSAGE, self.err[-3000:]
        assert self.err.count(MESSAGE) == 1
        assert "Traceback" not in self.err and "Exception ignored" not in self.err, self.err[-3000:]
        assert self.secs < 5, f"exited {self.secs:.1f} s after SIGINT"
        assert self.left == [], f"child processes left: {self.left}"


def interrupt(
    args: list[str],
    ready: Callable[[psutil.Process, str], bool],
    delay: float,
    *,
    group: bool = True,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> Interrupted:
    """Run ``bayeslmm ARGS``; once ``ready(process, stderr so far)``, wait ``delay`` s and send SIGINT.

    The command runs as a terminal's foreground command does, with SIGINT at its default: where the
    tests themselves run as a background job (``pytest ... &`` in a script), the shell has set SIGINT
    to "ignore", which a child inherits, and Ctrl-C would rightly do nothing.
    """
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        p = subprocess.Popen(
            [*_cmd(), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda: out.append(p.stdout.read())),
        threading.Thread(target=lambda: err.extend(iter(p.stderr.readline, ""))),
    ]
    for t in readers:
        t.start()
    proc = psutil.Process(p.pid)
    deadline = time.monotonic() + timeout
    try:
        while not ready(proc, "".join(err)):
            assert p.poll() is None, f"ended before the signal: {p.returncode} {''.join(err)[-2000:]}"
            assert time.monotonic() < deadline, "not ready in time"
            time.sleep(0.05)
        time.sleep(delay)
        assert p.poll() is None, f"ended before the signal: {p.returncode}"
        kids = proc.children(recursive=True)
        t0 = time.monotonic()
        if group:
            os.killpg(p.pid, signal.SIGINT)
        else:
            p.send_signal(signal.SIGINT)
        code = p.wait(timeout=60)
        secs = time.monotonic() - t0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    for t in readers:
        t.join(10)
    end = time.monotonic() + 3  # multiprocessing's resource tracker exits once its parent has
    while True:
        left = [k.pid for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]
        if not left or time.monotonic() > end:
            break
        time.sleep(0.1)
    for k in kids:
        if k.is_running():
            k.kill()
    return Interrupted(code, "".join(out), "".join(err), secs, left)


def sampling(proc: psutil.Process, err: str) -> bool:
    return "Sequential sampling" in err or "Multiprocess sampling" in err


def has_children(proc: psutil.Process, err: str) -> bool:
    """Worker processes started (or, with one core, the work under way in the process itself)."""
    return bool(proc.children()) or proc.cpu_times().user > 3.0


@pytest.mark.parametrize("delay", [0.15, 0.3, 0.6])
def test_ctrl_c_at_start_up(delay: float) -> None:
    """While NumPy, pandas and SciPy are imported: ``import bayeslmm`` loads none of them, so the
    handling is installed before they load."""
    r = interrupt(
        ["fit", "sleepstudy", "-f", "Reaction ~ Days + (Days | Subject)", "--json"], lambda proc, err: True, delay
    )
    r.check()
    assert r.out == ""


def test_ctrl_c_during_the_bootstrap(tmp_path: Path) -> None:
    args = ["lrt", "pig_weights", "--null", "weight ~ num_weeks", "--alt", PIG, "--bootstrap", "100000", "--seed", "1"]
    r = interrupt(args, has_children, 1.0)
    r.check()
    assert r.out == ""
    r = interrupt([*args, "--json"], has_children, 1.0, group=False)
    r.check()
    assert r.out == ""


@pytest.mark.slow
@pytest.mark.parametrize("group", [True, False])
def test_ctrl_c_while_sampling_reports_no_partial_posterior(tmp_path: Path, group: bool) -> None:
    out = tmp_path / "post.nc"
    r = interrupt(
        [
            "sample",
            "pig_weights",
            "-f",
            PIG,
            "--draws",
            "100000",
            "--tune",
            "1000",
            "--seed",
            "1",
            "--json",
            "--out",
            str(out),
        ],
        sampling,
        1.0,
        group=group,
    )
    r.check()
    assert r.out == "" and not out.exists()  # no JSON, no netCDF of a partial posterior


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.5, 3.0])
def test_ctrl_c_while_compiling_on_a_cold_cache_in_text_mode(tmp_path: Path, delay: float) -> None:
    # Numba compiles through ctypes callbacks, where a KeyboardInterrupt is printed as "Exception
    # ignored" and lost: it is delivered again
    r = interrupt(
        ["sample", "pig_weights", "-f", PIG, "--param", "marginal", "--draws", "100000"],
        lambda proc, err: "Initializing NUTS" in err,
        delay,
        env={"PYTENSOR_FLAGS": f"base_compiledir={tmp_path / 'cache'}"},
    )
    r.check()
    assert r.out == ""


@pytest.mark.slow
def test_ctrl_c_during_the_demo(tmp_path: Path) -> None:
    r = interrupt(["demo", "--out", str(tmp_path / "demo"), "--draws", "100000"], sampling, 1.0)
    r.check()
    assert "REML" in r.out and "report" not in r.out  # what came before; no result of the sampling
    assert not (tmp_path / "demo" / "report.html").exists()


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("dask.dataframe")
    pytest.importorskip("pyarrow")
    d = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(0)
    for i in range(30):
        n = 200_000
        g = rng.integers(0, 2000, n)
        x = rng.normal(size=n)
        y = 1 + 0.5 * x + rng.normal(size=2000)[g] + rng.normal(size=n)
        pd.DataFrame({"y": y, "x": x, "g": g}).to_parquet(d / f"part.{i:02d}.parquet")
    return d


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["processes", "threads"])
def test_ctrl_c_during_an_out_of_core_fit(parquet_dir: Path, scheduler: str) -> None:
    # the whole threaded command takes about 2.7 s of CPU: the signal must land well before its end
    ready = has_children if scheduler == "processes" else (lambda proc, err: proc.cpu_times().user > 0.8)
    delay = 0.5 if scheduler == "processes" else 0.2
    r = interrupt(["fit", str(parquet_dir), "-f", "y ~ x + I(x**2) + (x | g)", "--scheduler", scheduler], ready, delay)
    r.check()
    assert r.out == ""


# ---------------------------------------------------------------------------------- Python API
@pytest.fixture
def interrupt_at_step(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], dict]]:
    """SIGINT to this process at the n-th NUTS step (PyMC's own sampler), as Ctrl-C would."""
    from pymc.step_methods.hmc.nuts import NUTS

    state: dict = {"steps": 0, "at": None, "pid": os.getpid(), "sent": None}
    astep = NUTS.astep

    def counting(self, q0):
        state["steps"] += 1
        if state["steps"] == state["at"]:
            state["sent"] = time.monotonic()
            os.kill(state["pid"], signal.SIGINT)
        return astep(self, q0)

    monkeypatch.setattr(NUTS, "astep", counting)

    def arm(n: int) -> dict:
        state.update(steps=0, at=n, sent=None)
        return state

    # tests run as a background job (``pytest ... &`` in a script) start with SIGINT ignored: give this
    # process a terminal's default handling for the test, as a Python session in a terminal has
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield arm
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow
def test_the_api_raises_keyboard_interrupt(pig, interrupt_at_step) -> None:
    import bayeslmm
    from bayeslmm.bayes import sample

    spec = bayeslmm.model_spec(PIG, pig)
    state = interrupt_at_step(200)
    with pytest.raises(KeyboardInterrupt):
        sample(spec, draws=100_000, tune=500, chains=2, seed=1)
    assert time.monotonic() - state["sent"] < 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back


@pytest.mark.slow
def test_allow_partial_returns_the_draws_so_far_marked_partial(pig, interrupt_at_step) -> None:
    import bayeslmm
    from bayeslmm.bayes import sample

    spec = bayeslmm.model_spec(PIG, pig)
    state = interrupt_at_step(700)
    idata = sample(spec, draws=100_000, tune=500, chains=2, seed=1, random_seed=None, allow_partial=True)
    assert time.monotonic() - state["sent"] < 60  # the short posterior is still completed
    post = idata.posterior
    assert post.attrs["partial"] == 1 and post.attrs["draws_requested"] == 100_000
    assert post.sizes["draw"] < 100_000
    assert state["steps"] < 1000  # the other chain did not run in full
