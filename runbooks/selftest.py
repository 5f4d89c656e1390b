"""``selftest``: rehearse the engine end to end without touching any infrastructure.

Each step writes a marker file in a work directory and checks it; ``--fail-at N`` makes step
N's check fail so you can watch compensation remove the earlier markers; ``--hold-until-file
PATH`` pauses step 2 until PATH exists, to rehearse killing a run and resuming it. Every
effect is appended to ``journal`` in the work directory, so a rehearsal can prove that each
step's effect happened exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from runbooks.engine.errors import InvalidInput
from runbooks.engine.params import RunbookParams
from runbooks.engine.plan import PlanContext, PlanDraft, RunContext, Step
from runbooks.engine.registry import runbook

HOLD_POLL_S = 0.05


class SelftestParams(RunbookParams):
    steps: int = Field(3, ge=1, le=10, description="number of marker steps (1-10)")
    fail_at: int | None = Field(None, ge=1, le=10, description="make step N's check fail")
    hold_until_file: str | None = Field(
        None, description="pause step 2 until this file exists (rehearse crash and resume)"
    )
    workdir: str | None = Field(
        None,
        description="directory for markers, inside the state directory (default: "
        "<state dir>/selftest/<environment>; a relative name goes under <state dir>/selftest)",
    )


@dataclass(frozen=True, kw_only=True)
class WriteMarker(Step, kind="selftest.marker"):
    directory: str
    index: int
    fail: bool = False
    hold_until_file: str | None = None
    timeout: float = 2.0

    @property
    def path(self) -> Path:
        return Path(self.directory) / f"step-{self.index}"

    def describe(self) -> str:
        text = f"write marker {self.path}"
        if self.hold_until_file:
            text += f", after {self.hold_until_file} exists"
        if self.fail:
            text += " (its check is set to fail)"
        return text

    def _journal(self, line: str) -> None:
        with (Path(self.directory) / "journal").open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def run(self, ctx: RunContext) -> str | None:
        if self.path.exists():
            return "marker already present: nothing to do"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.hold_until_file:
            (Path(self.directory) / f"holding-{self.index}").touch()
            while not Path(self.hold_until_file).exists():
                ctx.check_cancelled()
                ctx.clock.sleep(HOLD_POLL_S)
        self.path.write_text(ctx.execution_id + "\n", encoding="utf-8")
        self._journal(f"step-{self.index}")
        return f"wrote {self.path.name}"

    def verify(self, ctx: RunContext) -> bool:
        return self.path.exists() and not self.fail

    def undo(self, ctx: RunContext) -> str | None:
        if not self.path.exists():
            return "marker already absent"
        self.path.unlink()
        self._journal(f"undo-{self.index}")
        return f"removed {self.path.name}"


def _workdir(ctx: PlanContext, params: SelftestParams) -> Path:
    """Where the markers go: always inside the state directory, whoever asks from where.

    A relative ``--workdir`` is taken under ``<state dir>/selftest``; an absolute one must lie
    inside the state directory (``/selftest --workdir /etc`` from Slack wrote where it said).
    """
    base = (ctx.state_dir / "selftest").resolve()
    if not params.workdir:
        return base / params.environment
    wanted = Path(params.workdir)
    directory = (wanted if wanted.is_absolute() else base / wanted).resolve()
    state = ctx.state_dir.resolve()
    if directory != state and state not in directory.parents:
        raise InvalidInput(
            f"--workdir {params.workdir!r} is outside the state directory {state}; give a "
            f"name under it (e.g. --workdir rehearsal: {base / 'rehearsal'})"
        )
    return directory


@runbook("selftest", params=SelftestParams, lock="{environment}:selftest")
def selftest(ctx: PlanContext, params: SelftestParams) -> PlanDraft:
    """Rehearse the engine: write and check marker files, no infrastructure touched.

    Plans only the markers that are missing, so a second run has nothing to do.
    """
    directory = _workdir(ctx, params)
    steps: list[Step] = []
    present = []
    for index in range(1, params.steps + 1):
        marker = WriteMarker(
            directory=str(directory),
            index=index,
            fail=params.fail_at == index,
            hold_until_file=params.hold_until_file if index == 2 else None,
        )
        if marker.path.exists():
            present.append(index)
            continue
        steps.append(marker)
    notes = (
        [f"markers already present for step(s) {', '.join(map(str, present))}"] if present else []
    )
    if not steps:
        notes.append(f"nothing to do; remove {directory} to rehearse again")
    return PlanDraft(
        steps=steps, summary=f"{len(steps)} marker step(s) in {directory}", notes=notes
    )
