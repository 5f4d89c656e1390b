# runbook-bot: the bot process (HTTP server for Slack, webhooks, /health, /ready).
# Multi-stage: the build stage installs into a virtualenv; the final image copies only that.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runbooks ./runbooks
COPY runbook_cli ./runbook_cli
COPY bot ./bot
COPY reports ./reports
COPY sandbox ./sandbox
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=3000 \
    RUNBOOK_BOT_CONFIG=/etc/runbook-bot \
    RUNBOOK_BOT_HOME=/var/lib/runbook-bot
# RUNBOOK_BOT_AUDIT_KEY and Slack/AWS credentials come from the orchestrator's secrets.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/runbook-bot --create-home runbook
COPY --from=build /opt/venv /opt/venv
COPY config/example /etc/runbook-bot
USER 10001:10001
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '3000'), timeout=2)"]
CMD ["python", "-m", "bot", "serve"]
