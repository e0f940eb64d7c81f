"""Which runs a candidate is judged against: a window of comparable baseline runs from the results database.

A baseline is only as good as its likeness to the candidate: the same bench, the same kind of figures
(simulated, emulated or real), the same measurement settings and firmware family. A run that differs is
refused with the difference named, never silently compared.
"""

from __future__ import annotations

from hil.errors import HilError
from hil.gate.stats import MIN_SESSIONS
from hil.results import MAIN_BRANCHES, ResultsStore, Run, crashed

# Settings that change what a figure means (run flags); the variant list may differ.
SETTINGS = ("trials", "warmup", "inferences", "window_s", "accuracy_samples", "data")


def remeasure_of(run: Run) -> int | None:
    """The run a re-measurement session belongs to (None for an ordinary run)."""
    ref = run.flags.get("remeasure_of")
    return int(ref) if ref is not None else None


def kind(run: Run) -> str:
    """'simulated', 'emulated' or 'real'."""
    if run.meta.get("emulated"):
        return "emulated"
    return "simulated" if run.simulated else "real"


def _firmware_family(run: Run) -> str | None:
    fw = run.meta.get("firmware")
    return str(fw).split()[0] if fw else None


def _noise_model(run: Run) -> dict | None:
    noise = run.meta.get("noise")
    if not isinstance(noise, dict) or not noise.get("enabled"):
        return None
    return {k: v for k, v in noise.items() if k != "seed"}


def differences(candidate: Run, base: Run) -> list[str]:
    """How `base` was measured differently from `candidate`, in words (empty: comparable)."""
    out = []
    if kind(candidate) != kind(base):
        out.append(f"run {candidate.id} is {kind(candidate)} and baseline run {base.id} is {kind(base)}: "
                   f"a {kind(candidate)} run is never gated against a {kind(base)} bench's baseline")
        return out
    if candidate.bench != base.bench:
        out.append(f"baseline run {base.id} was measured on bench {base.bench}, run {candidate.id} on "
                   f"{candidate.bench}")
    for key in SETTINGS:
        a, b = candidate.flags.get(key), base.flags.get(key)
        if a != b:
            out.append(f"baseline run {base.id} was measured with {key} {b}, run {candidate.id} with {a}")
    fa, fb = _firmware_family(candidate), _firmware_family(base)
    if fa and fb and fa != fb:
        out.append(f"baseline run {base.id} ran firmware {fb}, run {candidate.id} firmware {fa}")
    na, nb = _noise_model(candidate), _noise_model(base)
    if candidate.simulated and na != nb:
        out.append(f"baseline run {base.id} had virtual bench noise {nb or 'off'}, run {candidate.id} {na or 'off'}")
    return out


def candidate_sessions(store: ResultsStore, run: Run) -> list[Run]:
    """The candidate run and its re-measurement sessions, oldest first."""
    return [run] + [r for r in store.runs() if remeasure_of(r) == run.id]


def _ids(text: str) -> list[int] | None:
    parts = [p.strip() for p in text.replace("..", "-").split(",") if p.strip()]
    if not parts or not all(p.replace("-", "").isdigit() and p.count("-") <= 1 for p in parts):
        return None
    out: list[int] = []
    for p in parts:
        a, _, b = p.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def branch_runs(store: ResultsStore, ref: str) -> list[Run]:
    """The finished ordinary runs (not re-measurements) of branch `ref` (`latest-main`: main or master), oldest
    first: the runs a baseline window or a noise estimate is taken from."""
    branches = MAIN_BRANCHES if ref == "latest-main" else (ref,)
    return [r for r in store.runs() if r.git_branch in branches and r.status in ("passed", "failed")
            and remeasure_of(r) is None]


def baseline_window(store: ResultsStore, ref: str, candidate: Run, *, window: int) -> list[Run]:
    """The baseline runs for `candidate`: `ref` is a branch (`main`; `latest-main` = main or master: its last
    `window` finished runs before the candidate) or run ids (`41`, `31-40`, `31,33,35`)."""
    text = str(ref).strip()
    if window < 1:
        raise HilError(f"--baseline-window {window}: must be a positive number of runs")
    ids = _ids(text)
    if ids is not None:
        runs = [store.run(i) for i in ids]
        for r in runs:
            if crashed(r.meta):
                raise HilError(f"baseline run {r.id} ended in an unexpected error (see its meta, crashes_*); a "
                               "crashed run is never a baseline: pass other --baseline runs")
            if r.id == candidate.id or remeasure_of(r) == candidate.id:
                raise HilError(f"run {r.id} is the run being gated (or one of its re-measurements); pass other "
                               "--baseline runs")
            diff = differences(candidate, r)
            if diff:
                raise HilError(diff[0] + "; gate against runs measured the same way")
        return runs
    branches = MAIN_BRANCHES if text == "latest-main" else (text,)
    pool = [r for r in branch_runs(store, text) if r.id < candidate.id and not crashed(r.meta)]
    if not pool:
        raise HilError(f"no finished run on branch {' or '.join(branches)} before run {candidate.id} in "
                       f"{store.path}; measure the base branch first (reference {text!r})")
    alike = [r for r in pool if not differences(candidate, r)]
    if len(alike) < MIN_SESSIONS:
        unlike = [r for r in pool if differences(candidate, r)]
        if unlike:
            raise HilError(differences(candidate, unlike[-1])[0] + f"; only {len(alike)} run(s) on "
                           f"{' or '.join(branches)} were measured like run {candidate.id} (the gate needs "
                           f"{MIN_SESSIONS})")
    return alike[-window:]
