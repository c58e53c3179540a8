"""The report's former single module, kept only so that ``composer.cli``'s imports still work.

The report now lives in ``measures`` (music measures), ``cache`` (the result cache),
``compute`` (the experiments), ``text`` (the CLI's tables), ``figures`` and ``page`` (the HTML);
delete this module once ``composer.cli`` imports from those.
"""

from composer.report.compute import ReportOptions, compute_fidelity, compute_report
from composer.report.page import write_report
from composer.report.text import format_matrix, format_overlaps

__all__ = ["ReportOptions", "compute_fidelity", "compute_report", "format_matrix", "format_overlaps", "write_report"]
