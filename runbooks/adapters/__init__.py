"""Adapters: one module per external system, the only place its SDK is imported.

``build_adapters`` gives the engine what the runbooks use (``runbooks.interfaces``). Clients
are created lazily, one per (environment, region), on first use.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Any

from runbooks.adapters.kube_contexts import context_problems
from runbooks.engine.config.loader import Config
from runbooks.engine.errors import InvalidInput
from runbooks.engine.secrets import is_reference, resolve_reference
from runbooks.interfaces import (
    AwsOps,
    CloudBackupOps,
    DatabaseOps,
    DataOps,
    GitOps,
    HealthOps,
    IdentityOps,
    Infrastructure,
    KubeOps,
    MetricsOps,
    PullRequestOps,
)


def kubeconfig_path() -> str | None:
    """The kubeconfig in force: $KUBECONFIG's first file, else ~/.kube/config, else none."""
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"].split(os.pathsep)[0]
    default = Path.home() / ".kube" / "config"
    return str(default) if default.exists() else None


def kube_context_problems(config: Config, *, kubeconfig: str | None = None) -> list[str]:
    """Every configured Kubernetes context that cannot be resolved (see ``kube_contexts``)."""
    contexts = {
        f"{name} {region}": context
        for name, env in config.environments.environments.items()
        for region, context in env.kube_contexts.items()
    }
    return context_problems(contexts, kubeconfig or kubeconfig_path())


class LiveInfrastructure(Infrastructure):
    """Adapters talking to real (or emulated) systems, as configured."""

    def __init__(self, config: Config, *, kubeconfig: str | None = None) -> None:
        self._config = config
        self._kubeconfig = kubeconfig
        self._kube: dict[tuple[str, str], KubeOps] = {}
        self._aws: dict[str, AwsOps] = {}
        self._databases: dict[str, DatabaseOps] = {}
        self._data: dict[str, DataOps] = {}
        self._lock = threading.Lock()

    def _kubeconfig_path(self) -> str | None:
        return self._kubeconfig or kubeconfig_path()

    def kube(self, environment: str, region: str) -> KubeOps:
        env = self._config.environment(environment)
        context = env.kube_contexts.get(region)
        if context is None:
            raise InvalidInput(
                f"{environment} has no Kubernetes context for {region}; configured: "
                f"{', '.join(env.kube_contexts) or 'none'} (kube_contexts in environments.yaml)"
            )
        with self._lock:
            if (environment, region) not in self._kube:
                from runbooks.adapters.kube import KubeAdapter, make_api_client

                api = make_api_client(context=context, kubeconfig=self._kubeconfig_path())
                self._kube[environment, region] = KubeAdapter(
                    api, region=region, label=f"{environment}/{region}"
                )
            return self._kube[environment, region]

    def aws(self, region: str) -> AwsOps:
        with self._lock:
            if region not in self._aws:
                from runbooks.adapters.aws import AwsAdapter

                # The endpoint comes from boto3's configuration (AWS_ENDPOINT_URL in the sandbox).
                self._aws[region] = AwsAdapter(region)
            return self._aws[region]

    def close(self) -> None:
        with self._lock:
            for database in self._databases.values():
                database.close()
            for data in self._data.values():
                data.close()
            self._databases.clear()
            self._data.clear()

    def database(self, environment: str) -> DatabaseOps:
        env = self._config.environment(environment)
        if env.mongodb is None:
            raise InvalidInput(f"{environment} has no database configured (mongodb)")
        with self._lock:
            if environment not in self._databases:
                from runbooks.adapters.mongo import MongoAdapter

                self._databases[environment] = MongoAdapter(environment, env.mongodb)
            return self._databases[environment]

    def data(self, environment: str, *, restore_target: bool = False) -> DataOps:
        env = self._config.environment(environment)
        if env.mongodb is None:
            raise InvalidInput(f"{environment} has no database configured (mongodb)")
        if restore_target and env.restore is None:
            raise InvalidInput(
                f"{environment} has no restore target configured",
                hint="add restore: {target_uri_env: ...} to the environment in "
                "environments.yaml (a scratch cluster, never the source)",
            )
        uri_env = (
            env.restore.target_uri_env if restore_target and env.restore else env.mongodb.uri_env
        )
        label = f"{environment} restore target" if restore_target else f"{environment} database"
        key = f"{environment}:{'target' if restore_target else 'source'}"
        with self._lock:
            if key not in self._data:
                from runbooks.adapters.mongo_data import MongoData

                self._data[key] = MongoData(uri_env, timeout=env.mongodb.timeout, label=label)
            return self._data[key]

    def cloud_backups(self, environment: str) -> CloudBackupOps:
        env = self._config.environment(environment)
        if env.mongodb is None or env.mongodb.kind != "atlas":
            raise InvalidInput(f"{environment} has no Atlas cluster (mongodb.kind: atlas)")
        from runbooks.adapters.mongo import AtlasBackupsAdapter

        return AtlasBackupsAdapter(environment, env.mongodb)

    def metrics(self, environment: str) -> MetricsOps:
        env = self._config.environment(environment)
        if env.prometheus is None:
            raise InvalidInput(f"{environment} has no Prometheus configured (prometheus)")
        from runbooks.adapters.prometheus import PrometheusAdapter

        return PrometheusAdapter(env.prometheus.url)

    def health(self) -> HealthOps:
        from runbooks.adapters.http_health import HttpHealth

        return HttpHealth()

    def git(self, environment: str) -> GitOps:
        from runbooks.adapters.git import GitAdapter

        gitops = self._config.environment(environment).gitops
        token = secret_env(gitops.token_env) if gitops.token_env else None
        if gitops.token_env and not token:
            raise InvalidInput(
                f"{environment}: gitops.token_env names ${gitops.token_env}, which is not set "
                "in the bot's environment"
            )
        return GitAdapter(token=token)

    def pull_requests(self, environment: str) -> PullRequestOps | None:
        wanted = self._config.environment(environment).gitops.pull_request
        if wanted is None:
            return None
        from runbooks.adapters.github import GitHubPulls

        key = f"{environment}: gitops.pull_request.token_env"
        if is_reference(wanted.token_env):
            token: str | None = resolve_reference(key, wanted.token_env, resolve_secret)
        else:
            token = secret_env(wanted.token_env)
            if not token:
                raise InvalidInput(
                    f"{key} names ${wanted.token_env}, which is not set in the bot's environment"
                )
        return GitHubPulls(wanted.api_url, token or "", timeout=wanted.timeout)

    def chat(self) -> IdentityOps | None:
        token = secret_env("SLACK_BOT_TOKEN")
        if not token:
            return None
        from runbooks.adapters.slack import SlackIdentity

        return SlackIdentity(token, os.environ.get("SLACK_API_URL") or None)

    def paging(self) -> IdentityOps | None:
        from runbooks.adapters.pagerduty import PagerDuty, PagerDutySettings

        settings = PagerDutySettings.from_env(
            {**os.environ, "PAGERDUTY_API_TOKEN": secret_env("PAGERDUTY_API_TOKEN") or ""}
        )
        if not settings.api_token:
            return None
        return _PagingIdentity(PagerDuty(settings))


class _PagingIdentity:
    """PagerDuty's token check, closing the client after each check."""

    def __init__(self, pagerduty: Any) -> None:
        self._pagerduty = pagerduty

    def identity(self) -> str:
        try:
            return str(self._pagerduty.identity())
        finally:
            self._pagerduty.close()


@functools.lru_cache(maxsize=64)
def resolve_secret(reference: str) -> str:
    """Resolve an ``aws-secretsmanager:`` reference (boto3 is imported only when one is used;
    each secret is fetched once per process)."""
    from runbooks.adapters.secrets import resolve_secret as resolve

    return resolve(reference)


def secret_env(name: str) -> str | None:
    """An environment variable's value, with an ``aws-secretsmanager:`` reference resolved."""
    value = os.environ.get(name)
    if value is None:
        return None
    return resolve_reference(name, value, resolve_secret)


def build_adapters(config: Config) -> LiveInfrastructure:
    """Create the adapters for this configuration (lazily; nothing connects yet)."""
    return LiveInfrastructure(config)
