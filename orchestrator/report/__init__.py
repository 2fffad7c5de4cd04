"""Reports of a run, read from the store (nothing here writes): the audit export (table, JSON, CSV), the
verification summary and the self-contained HTML report with its timeline.

    export     audit_rows, export_audit, verify_report (and the field lists of the exports)
    story      what happened, per task and for the run, as values (attempts, escalations, codes, gaps)
    timeline   the SVG timeline: lanes per task, or a histogram of tasks by state when there are many
    tables     the task table, HTTP exchanges and error codes, the trail's events and trigger legend
    html       render_html -> HtmlReport (the document and the verification: a broken chain is exit 4)
"""

from orchestrator.report.export import (
    CSV_FIELDS,
    FORMATS,
    FORMULA_PREFIXES,
    ROW_FIELDS,
    audit_rows,
    export_audit,
    verify_report,
)
from orchestrator.report.html import HtmlReport, render_html
from orchestrator.report.story import RunStory, TaskStory, tell
from orchestrator.report.timeline import (
    HISTOGRAM_BINS,
    OUTCOME_COLORS,
    STATE_COLORS,
    TIMELINE_MAX_ROWS,
)

__all__ = [
    "CSV_FIELDS",
    "FORMATS",
    "FORMULA_PREFIXES",
    "HISTOGRAM_BINS",
    "OUTCOME_COLORS",
    "ROW_FIELDS",
    "STATE_COLORS",
    "TIMELINE_MAX_ROWS",
    "HtmlReport",
    "RunStory",
    "TaskStory",
    "audit_rows",
    "export_audit",
    "render_html",
    "tell",
    "verify_report",
]
