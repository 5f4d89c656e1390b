"""The bot process: HTTP server (/health, /ready; Slack, /metrics and webhooks join later)."""
