"""Dashboards: the API (`tungku api`) for operators, inspectors and administrators, the
control-room and inspector pages it serves (`static/`), and Grafana dashboards (`grafana/`).

- `app`: the FastAPI application, its routes, access by role and facility;
- `auth`: users, roles, Argon2id passwords, expiring bearer tokens;
- `records`: the facility record (DOMAIN.md §5), created and updated with its history;
- `history`: the hash-chained history of every change made through the API;
- `status`: the computed compliance status with its reasons;
- `timeline`: incident timelines, downsampled from the reading rollups;
- `kpi`: ISA-18.2 alarm KPIs and the periodic compliance summary;
- `export`: timeline reports as CSV, HTML with plots, and PDF;
- `live`: alert transitions as Server-Sent Events, from the journal's NOTIFY;
- `cli`: `tungku api` and `tungku user`.
"""
