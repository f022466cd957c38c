"""The daily ETL workflow ``etl_daily``, in the Python DSL (:mod:`workflows.etl.dsl`).

A step finds the export files the source systems dropped for the date; a map step
extracts each file found (one step run per file, in parallel); a transform joins them,
then the load into the warehouse and a quality check run side by side, and a report
closes the run.  Steps pass Redis keys and row counts, never the rows: the data travels
by reference.
"""
