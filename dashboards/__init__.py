"""Dashboards: the API, the control-room page and the Grafana dashboards.

Empty in this release; it arrives after alerting.
"""
