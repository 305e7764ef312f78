"""The parts of the `super-admin.bulk-job` handlers (handlers/super_admin_bulk.py), one module per role.

- `selection`: which items a job works on (ids, or a filter's matches frozen in Redis) and the filter's SQL.
- `apply`: each item through the identity admin API, a few at a time, checkpointed after each.
- `checkpoint`: `Progress`, what a retried or stall-recovered job resumes from.
- `telemetry`: `BulkTelemetry`, the live metrics message and the last state kept for dashboards.
- `export`: the selection streamed from a server-side cursor through gzip into a file.
"""
