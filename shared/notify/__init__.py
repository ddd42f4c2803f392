"""Notifications driven by the event log, delivered through Apprise (Slack, Teams, Discord,
Matrix, e-mail, ntfy, JSON webhooks, …).

    python -m shared.notify     # or `freshen notify`; FRESHEN_NOTIFY_* settings

`messages` decides which events notify and what a person reads (pure); `targets` is the one
module that speaks Apprise; `outbox` keeps delivery state in Redis keys of the notifier's own;
`service` follows the global stream with a consumer group and delivers.
"""
