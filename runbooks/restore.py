"""Backups and the restore test that proves them: ``restore.backup`` and ``restore.test``.

``restore.backup ENV`` dumps every collection of the environment's database to its backup
bucket in mongodump's layout with a manifest (runbooks.kit.backups). Read-only against the
database.

``restore.test ENV`` picks a backup (``latest``, ``random-within DAYS`` or a key prefix),
restores it into a scratch database on the environment's restore target (never the source
cluster), rebuilds its indexes and verifies it: per-collection count and content hash against
the manifest, every index with the same key and options, the environment's smoke queries.
It fails closed: no collections, a collection missing, a check that could not run, each is a
failure, and the report says "checked N of M collections". It measures RTO achieved (phases:
download, restore, index build, verify) and RPO achieved (test start minus the backup's
consistency point) against the environment's database targets. The scratch database is
always dropped, on failure and on cancel too, unless ``--keep-for`` keeps a verified copy for
inspection: the run then returns once restored and verified, says where to connect (hosts and
database, no credentials) and when the copy is dropped, and records the drop as a deferred
step (``RunContext.defer``) that the bot's housekeeper, or ``runs.cleanup``, runs when due.
A copy that failed verification is dropped at once by the compensation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import Field, field_validator

from runbooks.engine.clock import format_duration, iso, parse_iso
from runbooks.engine.config.environments import EnvironmentConfig
from runbooks.engine.config.yaml_files import Seconds
from runbooks.engine.errors import InvalidInput, Refused, RunbookError
from runbooks.engine.params import RunbookParams
from runbooks.engine.plan import Measure, PlanContext, PlanDraft, RunContext, Step
from runbooks.engine.readiness import Observation, observe, readiness_check
from runbooks.engine.registry import runbook
from runbooks.engine.verdicts import verdict as verdict_of
from runbooks.interfaces import CloudSnapshot, InfrastructureError, infrastructure
from runbooks.kit import backups
from runbooks.kit.backups import Backup, RestoreReport


def _targets_note(env: EnvironmentConfig, *, point_in_time: bool = False) -> str:
    """The objectives a restore test is measured against, in words."""
    database = env.targets.get("database")
    rto = f"RTO {format_duration(database.rto)} (targets.database)" if database else "no RTO target"
    if point_in_time:
        return f"targets: {rto}; no RPO (a point-in-time restore returns the moment asked for)"
    interval = format_duration(_backup_interval(env))
    return f"targets: {rto}, RPO {interval} (the backup policy: a backup every {interval})"


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(ts))


def _needs(env: EnvironmentConfig, environment: str, *, restore: bool) -> None:
    """Refuse what the environment's configuration cannot do: a dump needs a bucket (to write
    it, or to restore it from); a restore test of Atlas snapshots needs none."""
    if env.mongodb is None:
        raise InvalidInput(
            f"{environment} has no database configured (mongodb in environments.yaml)"
        )
    atlas = env.mongodb.backups == "atlas"
    if env.backup_bucket is None and not (restore and atlas):
        raise InvalidInput(
            f"{environment} has no backup bucket (backup_bucket in environments.yaml)"
            + (
                f"; its backups are Atlas snapshots of {env.mongodb.atlas_cluster}, which "
                f"Atlas takes (restore.test {environment} restores them)"
                if atlas
                else ""
            )
        )
    if restore and env.restore is None:
        raise InvalidInput(
            f"{environment} has no restore target (restore: {{target_uri_env: ...}} in "
            "environments.yaml): a restore test never restores into the source"
        )


# --- restore.backup ----------------------------------------------------------------------------


class BackupParams(RunbookParams):
    prefix: str | None = Field(
        None, description="key prefix for this backup (default: runbook-bot/<time>)"
    )


def backup_prefix(ctx: RunContext, given: str | None) -> str:
    """The backup's key prefix: the one asked for, else ``runbook-bot/<the run's start>``
    (fixed for the execution, so a resume writes to the same place)."""
    return (given or f"runbook-bot/{_stamp(ctx.started_at or ctx.clock.now())}").strip("/")


@dataclass(frozen=True, kw_only=True)
class DumpDatabase(Step, kind="restore.dump"):
    environment: str
    database: str
    bucket: str
    #: None: ``runbook-bot/<start time>`` (a plan must not change when it is re-planned)
    prefix: str | None
    collections: int
    documents: int
    timestamp_field: str | None = None
    timeout: float = 3600.0

    def describe(self) -> str:
        where = self.prefix or "runbook-bot/<start time>"
        return (
            f"dump database {self.database} of {self.environment} ({self.collections} "
            f"collections, {self.documents} documents) to s3://{self.bucket}/{where}/ in "
            "mongodump's layout (gzip) with a manifest"
        )

    def _region(self, ctx: RunContext) -> str:
        return ctx.env.primary_region

    def run(self, ctx: RunContext) -> str | None:
        infra = infrastructure(ctx)
        aws = infra.aws(self._region(ctx))
        prefix = backup_prefix(ctx, self.prefix)
        manifest_key = f"{prefix}/{backups.MANIFEST}"
        if any(o.key == manifest_key for o in aws.objects(self.bucket, prefix + "/")):
            return f"s3://{self.bucket}/{prefix}/ already holds a complete backup"
        manifest = backups.dump(
            infra.data(self.environment),
            aws,
            bucket=self.bucket,
            prefix=prefix,
            database=self.database,
            environment=self.environment,
            timestamp_field=self.timestamp_field,
            clock_now=ctx.clock.now,
            check=ctx.check_cancelled,
            progress=ctx.progress,
        )
        for name, entry in manifest["collections"].items():
            ctx.note(
                f"{name}: {entry['count']} documents, {len(entry['indexes'])} indexes, "
                f"sha256 {entry['sha256'][:12]}…"
            )
        total = sum(e["count"] for e in manifest["collections"].values())
        return (
            f"backup s3://{self.bucket}/{prefix}/: {len(manifest['collections'])} "
            f"collections, {total} documents; consistency point {manifest['consistency_point']} "
            f"({manifest['consistency_source']})"
        )

    def verify(self, ctx: RunContext) -> bool:
        aws = infrastructure(ctx).aws(self._region(ctx))
        prefix = backup_prefix(ctx, self.prefix)
        manifest_key = f"{prefix}/{backups.MANIFEST}"
        return any(o.key == manifest_key for o in aws.objects(self.bucket, prefix + "/"))

    def undo(self, ctx: RunContext) -> str | None:
        """A dump that did not finish is removed, so nothing mistakes it for a backup."""
        aws = infrastructure(ctx).aws(self._region(ctx))
        prefix = backup_prefix(ctx, self.prefix)
        keys = [o.key for o in aws.objects(self.bucket, prefix + "/")]
        if keys:
            aws.delete_objects(self.bucket, keys)
        return f"removed {len(keys)} object(s) of the unfinished backup under {prefix}/"


@runbook("restore.backup", params=BackupParams, lock="{environment}:backup")
def restore_backup(ctx: PlanContext, params: BackupParams) -> PlanDraft:
    """Back up an environment's database to its backup bucket (mongodump layout + manifest)."""
    env = ctx.env
    _needs(env, params.environment, restore=False)
    assert env.mongodb is not None and env.backup_bucket is not None
    data = infrastructure(ctx).data(params.environment)
    database = env.mongodb.database
    names = [n for n in data.collection_names(database) if not n.startswith("system.")]
    if not names:
        raise Refused(
            f"database {database} of {params.environment} has no collections: nothing to back up",
            hint="check mongodb.database in environments.yaml",
        )
    counts = {name: data.count(database, name) for name in names}
    prefix = params.prefix.strip("/") if params.prefix else None
    if prefix is not None:
        aws = infrastructure(ctx).aws(env.primary_region)
        existing = aws.objects(env.backup_bucket, prefix + "/")
        if any(o.key.endswith("/" + backups.MANIFEST) for o in existing):
            raise Refused(
                f"s3://{env.backup_bucket}/{prefix}/ already holds a backup",
                hint="choose another --prefix (backups are never overwritten)",
            )
    step = DumpDatabase(
        environment=params.environment,
        database=database,
        bucket=env.backup_bucket,
        prefix=prefix,
        collections=len(names),
        documents=sum(counts.values()),
        timestamp_field=env.mongodb.timestamp_field,
    )
    notes = [f"{name}: {count} documents" for name, count in counts.items()]
    notes.append("read-only against the database; writes only under the new prefix")
    return PlanDraft(
        steps=[step],
        summary=f"back up {params.environment} database {database} to s3://{env.backup_bucket}/"
        f"{prefix or 'runbook-bot/<start time>'}/",
        notes=notes,
    )


# --- restore.test ------------------------------------------------------------------------------


class RestoreTestParams(RunbookParams):
    backup: str = Field(
        "latest",
        description="which backup: latest, 'random-within DAYS', or a key prefix in the bucket",
    )
    keep_for: Seconds | None = Field(
        None,
        description="keep the scratch database this long after the test starts (e.g. 2h), "
        "for inspection; default: drop it at once",
    )
    point_in_time: str | None = Field(
        None,
        description="Atlas only: restore the cluster as it was at this UTC time "
        "(ISO 8601, e.g. 2026-12-01T03:00:00Z) instead of a snapshot",
    )

    @field_validator("point_in_time")
    @classmethod
    def _absolute_time(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            moment = parse_iso(value.strip())
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO 8601 time; give an absolute UTC time such as "
                "2026-12-01T03:00:00Z"
            ) from None
        return iso(float(int(moment)))  # Atlas restores to the second


def scratch_name(ctx: RunContext, environment: str, prefix: str) -> str:
    """``<prefix><environment>_<start>_<run id>``: new for each execution and the same for
    all its attempts (a resume finds its own copy), so a plan never names it."""
    stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime(ctx.started_at or ctx.clock.now()))
    suffix = ctx.execution_id.removeprefix("rb-") or "run"
    return f"{prefix}{environment}_{stamp}_{suffix}"


def _drop(ctx: RunContext, environment: str, scratch: str, prefix: str) -> str:
    if not scratch.startswith(prefix):  # never drop anything we did not name
        raise InfrastructureError(f"refusing to drop {scratch}: not a scratch database ({prefix}*)")
    target = infrastructure(ctx).data(environment, restore_target=True)
    if scratch not in target.database_names():
        return f"scratch database {scratch} is gone"
    target.drop_database(scratch)
    return f"dropped scratch database {scratch}"


def _kept_until(ctx: RunContext, keep_for: float | None) -> float | None:
    """When a kept copy is due to be dropped (``keep_for`` after the run started), while that
    is still ahead; else None (drop it now)."""
    if not keep_for:
        return None
    until = (ctx.started_at or ctx.clock.now()) + keep_for
    return until if until > ctx.clock.now() else None


def _keep(ctx: RunContext, environment: str, until: float, database: str, where: str) -> str:
    """Record the copy's drop as a deferred step (``RunContext.defer``) and say where to
    connect (the restore target's hosts and the database, never its credentials) and when the
    copy goes; the run ends without holding the terminal."""
    ctx.defer(until)
    target = infrastructure(ctx).data(environment, restore_target=True)
    hosts = ",".join(sorted(target.hosts()))
    return (
        f"{where} kept for inspection: mongodb://{hosts}/{database} (the restore target's "
        f"credentials, not shown here); dropped at {iso(until)} by the bot's housekeeper, or "
        "by `invoke runs.cleanup` after then where no bot runs"
    )


@dataclass(frozen=True, kw_only=True)
class RestoreAndVerify(Step, kind="restore.test"):
    environment: str
    bucket: str
    prefix: str
    scratch_prefix: str
    collections: int
    manifest: bool
    smoke_queries: int
    keep_for: float | None = None
    timeout: float = 3600.0

    def describe(self) -> str:
        checks = (
            "counts and content hashes against the manifest, indexes"
            if self.manifest
            else "counts against the .bson files, indexes (no manifest: no content hashes)"
        )
        smoke = f", {self.smoke_queries} smoke quer{'y' if self.smoke_queries == 1 else 'ies'}"
        return (
            f"restore s3://{self.bucket}/{self.prefix} ({self.collections} collections) into a "
            f"new scratch database {self.scratch_prefix}{self.environment}_<start>_<run id> on "
            f"the {self.environment} restore target, build its indexes, verify "
            f"{checks}{smoke if self.smoke_queries else ''}"
        )

    def _backup(self, ctx: RunContext) -> Backup:
        found = backups.find_backups(infrastructure(ctx).aws(ctx.env.primary_region), self.bucket)
        for backup in found:
            if backup.prefix == self.prefix:
                return backup
        raise InfrastructureError(f"backup s3://{self.bucket}/{self.prefix} is gone")

    def run(self, ctx: RunContext) -> str | None:
        infra = infrastructure(ctx)
        target = infra.data(self.environment, restore_target=True)
        started = ctx.clock.now()
        scratch = scratch_name(ctx, self.environment, self.scratch_prefix)
        if scratch in target.database_names():
            # Left by an earlier attempt of this same run (the name is this run's own).
            target.drop_database(scratch)
        ctx.note(f"scratch database: {scratch}")
        try:
            report = backups.restore_into(
                infra.aws(ctx.env.primary_region),
                target,
                self._backup(ctx),
                scratch,
                check=ctx.check_cancelled,
                progress=ctx.progress,
            )
            restore = ctx.env.restore
            if restore is not None and restore.smoke_queries and report.restored:
                backups.smoke(target, report, restore.smoke_queries)
        except BaseException:
            if not self.keep_for:  # the cleanup compensation does not replace
                with contextlib.suppress(RunbookError):
                    _drop(ctx, self.environment, scratch, self.scratch_prefix)
            raise
        line = _report(ctx, report, started)
        if not report.passed:
            raise InfrastructureError(f"restore test {report.summary()}")
        return f"restore test {line}"

    def undo(self, ctx: RunContext) -> str | None:
        scratch = scratch_name(ctx, self.environment, self.scratch_prefix)
        return _drop(ctx, self.environment, scratch, self.scratch_prefix)


def _report(
    ctx: RunContext,
    report: RestoreReport,
    started: float,
    *,
    backup_line: str | None = None,
    point: float | None = None,
    point_in_time: float | None = None,
) -> str:
    """Note the restore test's report: per collection, the checks, the phases, RTO and RPO
    (as measures, for the drill report's trend), the verdict; returns the verdict.

    The RPO target is the backup policy's (``mongodb.backup_interval``): a restore of the
    last backup loses at most what was written since, one interval. A point-in-time restore
    has no RPO of its own: the report names the point restored instead."""
    lines: list[str | Measure] = [f"backup: {backup_line or report.backup.describe()}"]
    for name in report.expected:
        restored = report.restored.get(name)
        checks = [c for c in report.checks if c.collection == name]
        verdict = "ok" if checks and all(c.ok for c in checks) else "FAILED"
        count = f"{restored} documents restored" if restored is not None else "not restored"
        lines.append(f"{name}: {verdict} ({count})")
        lines += [f"  {c.line()}" for c in checks]
    for check in report.checks:
        if check.collection not in report.expected:
            lines.append(check.line())
    if report.manifest is None and backup_line is None:
        lines.append(
            "no manifest: a manifest would have added content hashes per collection and the "
            "consistency point (RPO)"
        )
    lines.append(report.phases.line())
    point = point if point is not None else backups.consistency_point(report)
    rto, rpo = backups.recovery_measures(report, started, ctx.env.targets.get("database"), point)
    measures = [rto]
    lines.append(rto)
    if point_in_time is not None:
        lines.append(
            f"point restored: {iso(point_in_time)} (a point-in-time restore has no RPO of its "
            "own: it returns the moment asked for)"
        )
    elif rpo is None:
        lines.append("RPO achieved: unknown (the backup records no consistency point)")
    else:
        interval = _backup_interval(ctx.env)
        rpo = dataclasses.replace(
            rpo,
            target=interval,
            detail=f"{rpo.detail}; backup policy: every {format_duration(interval)}",
        )
        measures.append(rpo)
        lines.append(rpo)
    said = f"{verdict_of(report.passed, measures)}; {report.details()}"
    lines.append(f"verdict: {said}")
    for entry in lines:
        if isinstance(entry, Measure):
            ctx.measure(entry)
        else:
            ctx.note(entry)
    return said


def _backup_interval(env: EnvironmentConfig) -> float:
    assert env.mongodb is not None
    return env.mongodb.backup_interval


@dataclass(frozen=True, kw_only=True)
class DropScratch(Step, kind="restore.drop_scratch"):
    environment: str
    scratch_prefix: str
    keep_for: float | None = None
    irreversible_reason = "it only removes the scratch copy"

    def describe(self) -> str:
        if self.keep_for:
            return (
                f"keep the scratch database for inspection until "
                f"{format_duration(self.keep_for)} after the test started (the run returns "
                "at once and says where to connect), then drop it"
            )
        return "drop the scratch database"

    def run(self, ctx: RunContext) -> str | None:
        scratch = scratch_name(ctx, self.environment, self.scratch_prefix)
        until = _kept_until(ctx, self.keep_for)
        if until is not None:
            # Not held here: the drop is recorded in the store and run when due.
            return _keep(ctx, self.environment, until, scratch, "scratch database")
        return _drop(ctx, self.environment, scratch, self.scratch_prefix)

    def verify(self, ctx: RunContext) -> bool:
        target = infrastructure(ctx).data(self.environment, restore_target=True)
        scratch = scratch_name(ctx, self.environment, self.scratch_prefix)
        kept = _kept_until(ctx, self.keep_for) is not None
        return (scratch in target.database_names()) == kept


@runbook("restore.test", params=RestoreTestParams, lock="{environment}:restore")
def restore_test(ctx: PlanContext, params: RestoreTestParams) -> PlanDraft:
    """Restore a backup into a scratch database and prove it: counts, hashes, indexes, smoke."""
    env = ctx.env
    _needs(env, params.environment, restore=True)
    assert env.mongodb is not None and env.restore is not None
    infra = infrastructure(ctx)
    problem = target_is_source(ctx, params.environment)
    if problem:
        raise Refused(problem, hint="point restore.target_uri_env at a scratch cluster")
    if env.mongodb.backups == "atlas":
        return _atlas_plan(ctx, params)
    assert env.backup_bucket is not None  # _needs: dumps come from the bucket
    if params.point_in_time is not None:
        raise InvalidInput(
            f"--point-in-time needs Atlas cloud backups; {params.environment}'s backups are "
            f"dumps in s3://{env.backup_bucket}/ (restorable only as they were taken)",
            hint="choose a dump with --backup latest|'random-within DAYS'|PREFIX",
        )
    found = backups.find_backups(infra.aws(env.primary_region), env.backup_bucket)
    now = ctx.clock.now()
    backup = backups.pick_backup(
        found, params.backup, now=now, seed=f"{params.environment}:{int(now // 86400)}"
    )
    notes = [f"backup: {backup.describe()}"]
    if backup.manifest_key is None:
        notes.append(
            "no manifest: counts are checked against the .bson files and indexes against "
            "the metadata; a manifest would add content hashes and the consistency point (RPO)"
        )
    notes.append(_targets_note(env))
    kept = f" (kept {format_duration(params.keep_for)} first)" if params.keep_for else ""
    notes.append(f"the scratch database is dropped afterwards{kept}, on failure and cancel too")
    steps: list[Step] = [
        RestoreAndVerify(
            environment=params.environment,
            bucket=env.backup_bucket,
            prefix=backup.prefix,
            scratch_prefix=env.restore.scratch_prefix,
            collections=len(backup.files),
            manifest=backup.manifest_key is not None,
            smoke_queries=len(env.restore.smoke_queries),
            keep_for=params.keep_for,
        ),
        DropScratch(
            environment=params.environment,
            scratch_prefix=env.restore.scratch_prefix,
            keep_for=params.keep_for,
        ),
    ]
    return PlanDraft(
        steps=steps,
        summary=f"restore test of {params.environment}: {backup.name} into a scratch database",
        notes=notes,
    )


# --- Atlas cloud backups -----------------------------------------------------------------------


def _atlas_plan(ctx: PlanContext, params: RestoreTestParams) -> PlanDraft:
    env = ctx.env
    assert env.mongodb is not None and env.restore is not None
    target = env.restore.atlas_target_cluster
    assert target is not None  # the configuration requires it with backups: atlas
    cloud = infrastructure(ctx).cloud_backups(params.environment)
    problem = not_scratch(cloud.cluster_tags(target), target)
    if problem:
        raise Refused(
            problem, hint=f"tag the scratch cluster {SCRATCH_TAG[0]}={SCRATCH_TAG[1]} in Atlas"
        )
    kept = _kept_on(ctx, params.environment, target)
    if kept is not None:
        run_id, until = kept
        raise Refused(
            f"scratch cluster {target} holds the copy {run_id} kept for inspection until "
            f"{iso(until)}: an Atlas restore wipes its target (and the kept copy's drop, when "
            "due, would drop this test's)",
            hint=f"run it after {iso(until)}, when the bot (or `runs.cleanup`) has dropped it",
        )
    snapshots = [s for s in cloud.snapshots() if s.status == "completed"]
    if not snapshots:
        raise InvalidInput(f"Atlas cluster {env.mongodb.atlas_cluster} has no completed snapshot")
    listed = [
        Backup("atlas", s.id, env.mongodb.database, s.created, None, {}, {}) for s in snapshots
    ]
    now = ctx.clock.now()
    point, base = _point_in_time(params, snapshots, now)
    if base is not None:
        chosen = Backup("atlas", base.id, env.mongodb.database, base.created, None, {}, {})
    else:
        chosen = backups.pick_backup(
            listed, params.backup, now=now, seed=f"{params.environment}:{int(now // 86400)}"
        )
    steps: list[Step] = [
        AtlasRestoreAndVerify(
            environment=params.environment,
            cluster=env.mongodb.atlas_cluster or "?",
            target_cluster=target,
            snapshot=chosen.prefix,
            taken=chosen.created,
            database=env.mongodb.database,
            smoke_queries=len(env.restore.smoke_queries),
            keep_for=params.keep_for,
            point_in_time=point,
        ),
        DropRestored(
            environment=params.environment,
            target_cluster=target,
            database=env.mongodb.database,
            keep_for=params.keep_for,
        ),
    ]
    what = (
        f"{env.mongodb.atlas_cluster} at {iso(point)} (point in time)"
        if point is not None
        else f"Atlas snapshot {chosen.prefix}"
    )
    return PlanDraft(
        steps=steps,
        summary=f"restore test of {params.environment}: {what} into scratch cluster {target}",
        notes=[
            f"backup: Atlas snapshot {chosen.prefix} of {env.mongodb.atlas_cluster}, taken "
            f"{iso(chosen.created)}"
            + (f", then its oplog replayed up to {iso(point)}" if point is not None else ""),
            "Atlas snapshots carry no per-collection counts or content hashes: collections and "
            "indexes are checked against the live cluster, counts shown beside the live ones",
            _targets_note(env, point_in_time=point is not None),
        ],
    )


SCRATCH_TAG = ("runbook-bot", "scratch")


def target_is_source(ctx: PlanContext, environment: str) -> str | None:
    """Why the environment's restore target is its source cluster (the hosts they share), or
    None when it is not: a restore test never writes to the source (``restore.test``
    refuses it, readiness reports it)."""
    infra = infrastructure(ctx)
    source = infra.data(environment).hosts()
    shared = source & infra.data(environment, restore_target=True).hosts()
    if not shared:
        return None
    return (
        f"the restore target of {environment} is the source cluster "
        f"({', '.join(sorted(shared))}): a restore test never writes to the source"
    )


def not_scratch(tags: dict[str, str], cluster: str) -> str | None:
    """Why the Atlas ``cluster`` (its ``tags``) may not be a restore target, or None when it
    is tagged ``runbook-bot: scratch`` (an Atlas restore wipes its target)."""
    if tags.get(SCRATCH_TAG[0]) == SCRATCH_TAG[1]:
        return None
    return (
        f"Atlas cluster {cluster} is not marked as scratch (tag {SCRATCH_TAG[0]}: "
        f"{SCRATCH_TAG[1]}; it has {tags or 'no tags'}): an Atlas restore wipes its target"
    )


def _kept_on(ctx: PlanContext, environment: str, target: str) -> tuple[str, float] | None:
    """(run id, until) of a restore test whose copy on the Atlas ``target`` cluster is kept
    for inspection and not due to be dropped yet; None when the cluster is free."""
    now = ctx.clock.now()
    for run in ctx.history():
        if run.runbook != "restore.test" or run.environment != environment:
            continue
        if run.state != "succeeded" or run.started_at is None:
            continue
        for step in run.steps:
            args = step.get("args") or {}
            if (
                step.get("kind") == DropRestored.kind
                and args.get("target_cluster") == target
                and args.get("keep_for")
                and run.started_at + float(args["keep_for"]) > now
            ):
                return run.id, run.started_at + float(args["keep_for"])
    return None


def _point_in_time(
    params: RestoreTestParams, snapshots: list[CloudSnapshot], now: float
) -> tuple[float | None, CloudSnapshot | None]:
    """The second a point-in-time restore goes back to, checked against what Atlas can do,
    and the snapshot it starts from (the newest by the end of that second; the job replays
    the oplog on it); (None, None) without ``--point-in-time``."""
    if params.point_in_time is None:
        return None, None
    point = parse_iso(params.point_in_time)
    if params.backup != "latest":
        raise InvalidInput(
            f"--point-in-time and --backup {params.backup} both choose what to restore; "
            "give one of them"
        )
    if point > now:
        raise InvalidInput(
            f"--point-in-time {params.point_in_time} is in the future (now {iso(now)}); "
            "give a time that has passed"
        )
    before = [s for s in snapshots if s.created < point + 1]
    if not before:
        oldest = min(s.created for s in snapshots)
        raise InvalidInput(
            f"--point-in-time {params.point_in_time} is before the oldest snapshot "
            f"({iso(oldest)}): Atlas restores to a point in time from a snapshot forward",
            hint=f"give a time at or after {iso(oldest)}",
        )
    return point, max(before, key=lambda s: s.created)


def _drop_restored(ctx: RunContext, environment: str, database: str, cluster: str) -> str:
    """Drop what an Atlas restore put on the scratch cluster (checked as scratch at plan)."""
    infrastructure(ctx).data(environment, restore_target=True).drop_database(database)
    return f"dropped {database} on scratch cluster {cluster}"


ATLAS_POLL_S = 2.0


@dataclass(frozen=True, kw_only=True)
class AtlasRestoreAndVerify(Step, kind="restore.atlas"):
    environment: str
    cluster: str
    target_cluster: str
    snapshot: str
    taken: float
    database: str
    smoke_queries: int
    keep_for: float | None = None
    point_in_time: float | None = None
    timeout: float = 4 * 3600.0

    def _what(self) -> str:
        snapshot = f"Atlas snapshot {self.snapshot} of {self.cluster}, taken {iso(self.taken)}"
        if self.point_in_time is None:
            return snapshot
        return f"{self.cluster} at {iso(self.point_in_time)} ({snapshot}, then its oplog)"

    def describe(self) -> str:
        return (
            f"restore {self._what()} into scratch cluster {self.target_cluster} (an Atlas "
            f"restore wipes it), then verify database {self.database}: collections and indexes "
            f"against the live cluster, {self.smoke_queries} smoke queries"
        )

    def run(self, ctx: RunContext) -> str | None:
        infra = infrastructure(ctx)
        cloud = infra.cloud_backups(self.environment)
        started = ctx.clock.now()
        if self.point_in_time is None:
            job = cloud.start_restore(self.snapshot, self.target_cluster)
        else:
            job = cloud.start_point_in_time_restore(int(self.point_in_time), self.target_cluster)
        ctx.note(f"Atlas restore job {job} into {self.target_cluster}")
        began = time.perf_counter()
        while not cloud.restore_finished(job):
            ctx.check_cancelled()
            ctx.progress(
                f"Atlas restore job {job}: running for {format_duration(ctx.clock.now() - started)}"
            )
            ctx.clock.sleep(ATLAS_POLL_S)
        restored = time.perf_counter() - began
        target = infra.data(self.environment, restore_target=True)
        report = backups.verify_copy(
            infra.data(self.environment), target, self.database, self.snapshot
        )
        report.phases.restore = restored
        restore = ctx.env.restore
        if restore is not None and restore.smoke_queries:
            backups.smoke(target, report, restore.smoke_queries)
        point = self.taken if self.point_in_time is None else self.point_in_time
        line = _report(
            ctx,
            report,
            started,
            backup_line=self._what(),
            point=point,
            point_in_time=self.point_in_time,
        )
        if not report.passed:  # the compensation drops a copy that failed, kept or not
            raise InfrastructureError(f"restore test {report.summary()}")
        return f"restore test {line}"

    def undo(self, ctx: RunContext) -> str | None:
        return _drop_restored(ctx, self.environment, self.database, self.target_cluster)


@dataclass(frozen=True, kw_only=True)
class DropRestored(Step, kind="restore.atlas_drop"):
    environment: str
    target_cluster: str
    database: str
    keep_for: float | None = None
    irreversible_reason = "it only removes the scratch copy"

    def describe(self) -> str:
        if self.keep_for:
            return (
                f"keep database {self.database} on scratch cluster {self.target_cluster} for "
                f"inspection until {format_duration(self.keep_for)} after the test started (the "
                "run returns at once and says where to connect), then drop it"
            )
        return f"drop database {self.database} on scratch cluster {self.target_cluster}"

    def run(self, ctx: RunContext) -> str | None:
        until = _kept_until(ctx, self.keep_for)
        if until is not None:
            # Not held here: the drop is recorded in the store and run when due.
            where = f"database {self.database} on scratch cluster {self.target_cluster}"
            return _keep(ctx, self.environment, until, self.database, where)
        return _drop_restored(ctx, self.environment, self.database, self.target_cluster)

    def verify(self, ctx: RunContext) -> bool:
        target = infrastructure(ctx).data(self.environment, restore_target=True)
        kept = _kept_until(ctx, self.keep_for) is not None
        return (self.database in target.database_names()) == kept


#: How long past the backup policy's interval the newest backup may be (the backup's own run
#: time): a nightly policy (``mongodb.backup_interval`` 24h) allows 25 h.
BACKUP_SLACK = 3600.0


def max_backup_age(env: EnvironmentConfig) -> float:
    """How old the newest backup may be: the environment's backup policy plus slack."""
    return _backup_interval(env) + BACKUP_SLACK


@readiness_check("restore.test", "a recent backup")
def recent_backup(ctx: PlanContext) -> Iterator[Observation]:
    """Where a restore test is set up: the newest backup (the bucket's dumps, or the cluster's
    Atlas snapshots) is younger than the backup policy's interval (``mongodb.backup_interval``,
    per environment) plus an hour's slack: 25 h for nightly backups."""
    env = ctx.env
    if env.mongodb is None or env.restore is None:
        return  # no restore test is set up for this environment
    infra = infrastructure(ctx)
    now = ctx.clock.now()
    limit = max_backup_age(env)
    policy = f"the backup policy: every {format_duration(_backup_interval(env))}, plus 1h"

    def age_words(created: float, what: str) -> tuple[bool, str]:
        age = now - created
        words = f"{what} taken {iso(created)}, {format_duration(age)} ago"
        if age > limit:
            return False, f"{words}: older than {format_duration(limit)} ({policy})"
        return True, words

    if env.mongodb.backups == "atlas":

        def snapshot() -> tuple[bool, str]:
            snapshots = infra.cloud_backups(ctx.environment).snapshots()
            done = [s for s in snapshots if s.status == "completed"]
            if not done:
                return False, "no completed Atlas snapshot"
            return age_words(done[-1].created, f"Atlas snapshot {done[-1].id}")

        yield observe(f"Atlas snapshots of {env.mongodb.atlas_cluster}", snapshot)
    elif env.backup_bucket is not None:
        bucket = env.backup_bucket

        def newest() -> tuple[bool, str]:
            found = backups.find_backups(infra.aws(env.primary_region), bucket)
            if not found:
                return False, f"no backup in s3://{bucket}"
            return age_words(found[-1].created, f"s3://{bucket}/{found[-1].prefix}")

        yield observe(f"backups in {bucket}", newest)


@readiness_check("restore.test", "a scratch restore target")
def scratch_target(ctx: PlanContext) -> Iterator[Observation]:
    """Where a restore test is set up: its restore target answers (a read-only call: list its
    databases), is not the source cluster, and for Atlas backups the target cluster is tagged
    ``runbook-bot: scratch``: the same rules ``restore.test`` refuses a plan by."""
    env = ctx.env
    if env.mongodb is None or env.restore is None:
        return  # no restore test is set up for this environment
    infra = infrastructure(ctx)

    def target() -> tuple[bool, str]:
        names = infra.data(ctx.environment, restore_target=True).database_names()
        problem = target_is_source(ctx, ctx.environment)
        if problem:
            return False, problem
        return True, f"answers ({len(names)} database(s)), not the source cluster"

    yield observe("restore target", target)
    cluster = env.restore.atlas_target_cluster
    if env.mongodb.backups == "atlas" and cluster is not None:

        def tagged() -> tuple[bool, str]:
            problem = not_scratch(
                infra.cloud_backups(ctx.environment).cluster_tags(cluster), cluster
            )
            if problem:
                return False, problem
            return True, f"tagged {SCRATCH_TAG[0]}: {SCRATCH_TAG[1]}"

        yield observe(f"Atlas cluster {cluster}", tagged)


#: How many of the newest passing restore tests the forecast's throughput comes from (the
#: slowest of them: a forecast errs on the late side).
FORECAST_TESTS = 5


def measured_throughput(ctx: PlanContext) -> tuple[float, int] | None:
    """(bytes per second, tests) of the environment's restore tests: the slowest of the newest
    ``FORECAST_TESTS`` passing ones that recorded what they restored (their RTO measure's
    bytes and seconds); None before any did."""
    rates = []
    for run in ctx.history():  # newest first
        if run.runbook != "restore.test" or run.environment != ctx.environment:
            continue
        if run.state != "succeeded":
            continue
        rto = next((m for m in run.measures if m.name == "RTO"), None)
        if rto is None or not rto.size or rto.seconds <= 0:
            continue
        rates.append(rto.size / rto.seconds)
        if len(rates) == FORECAST_TESTS:
            break
    return (min(rates), len(rates)) if rates else None


@readiness_check("restore.test", "restore time forecast")
def restore_forecast(ctx: PlanContext) -> Iterator[Observation]:
    """Where dumps are restored and the database has an RTO target: the newest backup's size
    ÷ the throughput past restore tests measured (``backups.forecast_restore``) is within the
    RTO; passing, it says when the backups' growth would cross it."""
    env = ctx.env
    database = env.targets.get("database")
    if env.mongodb is None or env.restore is None or database is None:
        return  # no restore test, or no RTO to forecast against
    if env.mongodb.backups == "atlas" or env.backup_bucket is None:
        return  # Atlas snapshots: their sizes are not read here (docs/readiness.md)
    bucket = env.backup_bucket
    infra = infrastructure(ctx)

    def forecast() -> tuple[bool, str]:
        measured = measured_throughput(ctx)
        if measured is None:
            return True, (
                "no restore test has measured a throughput yet: nothing to forecast (the "
                "drills' evidence says when one is due)"
            )
        throughput, tests = measured
        found = [b for b in backups.find_backups(infra.aws(env.primary_region), bucket) if b.size]
        if not found:
            return True, f"no backup in s3://{bucket} to forecast (see: a recent backup)"
        newest = found[-1]
        ahead = backups.forecast_restore(
            [(b.created, b.size) for b in found], throughput=throughput, rto=database.rto
        )
        words = (
            f"restoring {newest.name} ({newest.size} bytes) at {throughput:.0f} bytes/s (the "
            f"slowest of the last {tests} restore test(s)) takes about "
            f"{format_duration(ahead.predicted)}"
        )
        goal = f"RTO {format_duration(database.rto)} (targets.database)"
        if ahead.predicted > database.rto:
            return False, f"{words}: over the {goal}"
        if ahead.crosses_at is None:
            return True, f"{words}, within the {goal}; the backups are not growing"
        return True, (
            f"{words}, within the {goal}; at {ahead.growth_per_day:.0f} bytes/day the "
            f"backups cross it on {iso(ahead.crosses_at)[:10]}"
        )

    yield observe(f"restore of s3://{bucket}", forecast)
