"""AWS Secrets Manager: the resolver for ``aws-secretsmanager:`` references (startup only).

``<secret id or ARN>`` gives the secret string; ``<id>#<key>`` one field of a JSON secret.
The region is the ARN's, else boto3's default (``AWS_REGION`` / ``AWS_DEFAULT_REGION``).
Errors name the secret and the field, never a value.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from runbooks.adapters.aws import new_session
from runbooks.engine.errors import InvalidInput
from runbooks.interfaces import InfrastructureError


def resolve_secret(reference: str) -> str:
    secret_id, _, field = reference.partition("#")
    region = secret_id.split(":")[3] if secret_id.startswith("arn:") else None
    client: Any = new_session().client(
        "secretsmanager",
        region_name=region,
        config=BotoConfig(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5),
    )
    try:
        answer = client.get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise InfrastructureError(
            f"secret {secret_id}: {error.get('Code', 'error')}: {error.get('Message', '')}",
            hint="check the name and that this process's role may secretsmanager:GetSecretValue",
        ) from None
    except BotoCoreError as exc:
        raise InfrastructureError(f"secret {secret_id}: {exc}") from None
    value = answer.get("SecretString")
    if value is None:
        raise InvalidInput(f"secret {secret_id} is binary; runbook-bot reads string secrets")
    if not field:
        return str(value)
    try:
        doc = json.loads(value)
    except ValueError:
        raise InvalidInput(
            f"secret {secret_id} is not JSON, so it has no field {field!r}; drop '#{field}'"
        ) from None
    if not isinstance(doc, dict) or field not in doc:
        fields = ", ".join(sorted(doc)) if isinstance(doc, dict) else "none"
        raise InvalidInput(f"secret {secret_id} has no field {field!r}; fields: {fields}")
    return str(doc[field])
