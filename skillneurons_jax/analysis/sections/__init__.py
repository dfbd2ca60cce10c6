"""The report's sections, one module each; every section takes the shared `report_context.ReportContext`."""
