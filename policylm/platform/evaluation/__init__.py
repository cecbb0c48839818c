"""Evaluation: per-target metrics and rank correlation (``metrics``), achievements and the
Crafter score (``achievements``), sample efficiency (``sample_efficiency``), sweep results
(``sweeps``), and reports and plots (``reports``).
"""
