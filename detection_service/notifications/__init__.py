"""Telegram alerts (docs/notifications.md): queue.py (rows written with the event), worker.py
(sending, retries, buttons), crypto.py (bot tokens at rest), messages.py (texts, keyboard),
service.py (what the Notification API does). Kept import-light: the pipeline imports queue."""
