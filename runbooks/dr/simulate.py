"""``dr.simulate``: the annual DR simulation; the data scenarios (database-corruption,
accidental-deletion) here, region-failure in ``runbooks.dr.region_failure``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pydantic import Field, field_validator

from runbooks.dr.region_failure import region_failure_plan
from runbooks.engine.errors import InvalidInput, Refused
from runbooks.engine.params import RunbookParams
from runbooks.engine.plan import PlanContext, PlanDraft, RunContext, Step
from runbooks.engine.registry import runbook
from runbooks.interfaces import DataOps, InfrastructureError, infrastructure
from runbooks.kit import backups

SCENARIOS = ("region-failure", "database-corruption", "accidental-deletion")
CORRUPT_EVERY = 20  # database-corruption overwrites every 20th document of a collection


class SimulateParams(RunbookParams):
    scenario: str = Field(description="region-failure, database-corruption or accidental-deletion")
    environment: str = Field(
        "staging", description="a non-production environment (default staging)"
    )
    collection: str | None = Field(
        None, description="the collection to damage (default: the largest)"
    )

    @field_validator("scenario")
    @classmethod
    def _known_scenario(cls, value: str) -> str:
        if value not in SCENARIOS:
            raise ValueError(f"unknown scenario {value!r}; choose one of {', '.join(SCENARIOS)}")
        return value


def _sim_name(ctx: RunContext, step: DataStep, what: str) -> str:
    stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime(ctx.started_at or ctx.clock.now()))
    suffix = ctx.execution_id.removeprefix("rb-") or "run"
    return f"{step.scratch_prefix}{step.environment}_sim_{stamp}_{suffix}_{what}"


@dataclass(frozen=True, kw_only=True)
class DataStep(Step):
    """A simulation step on the restore target's scratch copies of an environment's data."""

    environment: str
    database: str
    scratch_prefix: str
    timeout: float = 3600.0

    def target(self, ctx: RunContext) -> DataOps:
        return infrastructure(ctx).data(self.environment, restore_target=True)

    def drop(self, ctx: RunContext, what: str) -> str:
        name = _sim_name(ctx, self, what)
        target = self.target(ctx)
        if name not in target.database_names():
            return f"{name} is gone"
        target.drop_database(name)
        return f"dropped {name}"


@dataclass(frozen=True, kw_only=True)
class CopyLive(DataStep, kind="dr.sim_copy"):
    def describe(self) -> str:
        return (
            f"copy {self.environment} database {self.database} into an incident copy on the "
            "restore target (the live database is only read)"
        )

    def run(self, ctx: RunContext) -> str | None:
        name = _sim_name(ctx, self, "incident")
        target = self.target(ctx)
        if name in target.database_names():
            target.drop_database(name)  # an earlier attempt of this run
        counts = backups.copy_database(
            infrastructure(ctx).data(self.environment),
            self.database,
            target,
            name,
            check=ctx.check_cancelled,
        )
        listed = ", ".join(f"{c} {n}" for c, n in counts.items())
        return f"incident copy {name}: {listed}"

    def undo(self, ctx: RunContext) -> str | None:
        return self.drop(ctx, "incident")


@dataclass(frozen=True, kw_only=True)
class InjectFailure(DataStep, kind="dr.sim_inject"):
    scenario: str
    collection: str

    def describe(self) -> str:
        if self.scenario == "accidental-deletion":
            what = f"drop collection {self.collection}"
        else:
            what = f"overwrite every {CORRUPT_EVERY}th document of {self.collection} with garbage"
        return f"inject {self.scenario} into the incident copy: {what}"

    def run(self, ctx: RunContext) -> str | None:
        name = _sim_name(ctx, self, "incident")
        target = self.target(ctx)
        if self.scenario == "accidental-deletion":
            count = target.count(name, self.collection)
            target.drop_collection(name, self.collection)
            if self.collection in target.collection_names(name):
                raise InfrastructureError(f"{self.collection} is still in {name} after the drop")
            return f"dropped {self.collection} ({count} documents) in the incident copy"
        damaged = backups.corrupt(target, name, self.collection, every=CORRUPT_EVERY)
        return f"corrupted {damaged} documents of {self.collection} in the incident copy"

    def undo(self, ctx: RunContext) -> str | None:
        return "nothing to undo: the incident copy is dropped with step 1"


@dataclass(frozen=True, kw_only=True)
class RecoverFromBackup(DataStep, kind="dr.sim_recover"):
    scenario: str
    collection: str
    bucket: str
    prefix: str

    def describe(self) -> str:
        return (
            f"recover: restore s3://{self.bucket}/{self.prefix} into a recovered copy, verify it, "
            f"and compare it with the pre-incident data (what a real {self.scenario} would lose)"
        )

    def run(self, ctx: RunContext) -> str | None:
        infra = infrastructure(ctx)
        target = self.target(ctx)
        started = ctx.clock.now()
        name = _sim_name(ctx, self, "recovered")
        incident = _sim_name(ctx, self, "incident")
        if name in target.database_names():
            target.drop_database(name)
        aws = infra.aws(ctx.env.primary_region)
        found = [b for b in backups.find_backups(aws, self.bucket) if b.prefix == self.prefix]
        if not found:
            raise InfrastructureError(f"backup s3://{self.bucket}/{self.prefix} is gone")
        report = backups.restore_into(aws, target, found[0], name, check=ctx.check_cancelled)
        ctx.note(f"backup checks: {report.summary()}")
        if not report.passed:
            raise InfrastructureError(f"the backup cannot be recovered from: {report.summary()}")
        source = infra.data(self.environment)
        lost = 0
        for collection in sorted(set(source.collection_names(self.database)) | {self.collection}):
            ctx.check_cancelled()
            before = backups.digests(source, self.database, collection)
            after = backups.digests(target, name, collection)
            difference = backups.compare(before, after)
            lost += difference.differs
            ctx.note(
                f"{collection}: {difference.same} of {len(before)} documents as before the "
                f"incident; would be lost: {len(difference.missing)} newer than the backup, "
                f"{len(difference.changed)} changed since, {len(difference.extra)} deleted since "
                "(would come back)"
            )
        damaged = backups.compare(
            backups.digests(source, self.database, self.collection),
            backups.digests(target, incident, self.collection),
        )
        repaired = backups.compare(
            {
                k: v
                for k, v in backups.digests(source, self.database, self.collection).items()
                if k in set(damaged.missing) | set(damaged.changed)
            },
            backups.digests(target, name, self.collection),
        )
        ctx.note(
            f"damage: {damaged.differs} documents of {self.collection} damaged in the incident "
            f"copy; {repaired.same} of them recovered as they were before the incident"
        )
        ctx.note(report.phases.line())
        rto, rpo = backups.recovery_measures(
            report, started, ctx.env.targets.get("database"), backups.consistency_point(report)
        )
        ctx.measure(rto)
        if rpo is not None:
            ctx.measure(rpo)
        return (
            f"{self.scenario} simulated and recovered: {repaired.same}/{damaged.differs} damaged "
            f"documents recovered; {lost} document(s) would be lost"
        )

    def undo(self, ctx: RunContext) -> str | None:
        return self.drop(ctx, "recovered")


@dataclass(frozen=True, kw_only=True)
class DropCopies(DataStep, kind="dr.sim_cleanup"):
    irreversible_reason = "it only removes the simulation's scratch copies"

    def describe(self) -> str:
        return "drop the incident copy and the recovered copy"

    def run(self, ctx: RunContext) -> str | None:
        return "; ".join(self.drop(ctx, what) for what in ("recovered", "incident"))


# The simulation holds the whole environment: a region failure moves everything, and a data
# scenario must not race a change to the data it compares with.
@runbook("dr.simulate", params=SimulateParams, lock="{environment}:*")
def dr_simulate(ctx: PlanContext, params: SimulateParams) -> PlanDraft:
    """The annual DR simulation: inject a failure in a non-production copy, recover, measure."""
    env = ctx.env
    if env.tier == "production" or params.environment == "production":
        raise Refused(
            f"dr.simulate never runs in production ({params.environment} is tier {env.tier}), "
            "with or without break-glass",
            hint="simulate in staging: dr.simulate --scenario SCENARIO --environment staging",
        )
    if params.scenario == "region-failure":
        return region_failure_plan(ctx, params)
    if env.mongodb is None or env.backup_bucket is None or env.restore is None:
        raise InvalidInput(
            f"{params.environment} needs mongodb, backup_bucket and restore (a scratch "
            "cluster) in environments.yaml to simulate a data incident"
        )
    infra = infrastructure(ctx)
    source = infra.data(params.environment)
    target = infra.data(params.environment, restore_target=True)
    protected = set(source.hosts())
    for name in ctx.config.environment_names():
        other = ctx.config.environment(name)
        if other.tier == "production" and other.mongodb is not None:
            protected |= infra.data(name).hosts()
    if target.hosts() & protected:
        raise Refused(
            f"the restore target of {params.environment} is a live cluster "
            f"({', '.join(sorted(target.hosts() & protected))}): the simulation writes only to "
            "a scratch cluster"
        )
    database = env.mongodb.database
    names = [n for n in source.collection_names(database) if not n.startswith("system.")]
    if not names:
        raise Refused(f"{params.environment} database {database} has no collections to damage")
    collection = params.collection or max(names, key=lambda n: (source.count(database, n), n))
    if collection not in names:
        raise InvalidInput(
            f"{params.environment} database {database} has no collection {collection!r}",
            hint=f"one of: {', '.join(names)}",
        )
    found = backups.find_backups(infra.aws(env.primary_region), env.backup_bucket)
    backup = backups.pick_backup(found, "latest", now=ctx.clock.now(), seed="")
    prefix = env.restore.scratch_prefix
    environment = params.environment
    return PlanDraft(
        steps=[
            CopyLive(environment=environment, database=database, scratch_prefix=prefix),
            InjectFailure(
                environment=environment,
                database=database,
                scratch_prefix=prefix,
                scenario=params.scenario,
                collection=collection,
            ),
            RecoverFromBackup(
                environment=environment,
                database=database,
                scratch_prefix=prefix,
                scenario=params.scenario,
                collection=collection,
                bucket=env.backup_bucket,
                prefix=backup.prefix,
            ),
            DropCopies(environment=environment, database=database, scratch_prefix=prefix),
        ],
        summary=f"DR simulation in {params.environment}: {params.scenario} of {collection}, "
        f"recovered from {backup.name}",
        notes=[
            f"backup to recover from (the latest): {backup.describe()}",
            "the live database is only read; every write goes to scratch copies on the "
            "restore target, dropped at the end (and on failure or cancel)",
        ],
    )
