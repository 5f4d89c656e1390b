"""The bot's webhooks: each vendor's wire format, authentication and replay rules, in front of
the engine's intake (``alertmanager``: Alertmanager's notifications; ``pagerduty``: PagerDuty's
webhooks v3)."""

from bot.webhooks.alertmanager import AlertmanagerWebhook
from bot.webhooks.pagerduty import PagerDutyWebhook, signature_matches

__all__ = ["AlertmanagerWebhook", "PagerDutyWebhook", "signature_matches"]
