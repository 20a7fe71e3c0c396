"""One router per resource: jobs, uploads, webhooks, health."""
