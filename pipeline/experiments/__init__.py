"""The paper's experiments (ablation, multitask, transfer, attention, sharing, balance), plots and
the HTML report. Imports jobs and everything below."""
