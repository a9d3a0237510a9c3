"""Alerting: rules, detectors, the alarm lifecycle and the compliance record.

Empty in this release: ingestion comes first. The rule pack, exposure limits and the ISA-18.2
alarm lifecycle arrive with the next issue and will run on committed readings.
"""
