"""HTTP routes of the model registry. Model ids contain ``/``, so routes use ``{model_id:path}`` with
explicit suffixes (``/download``, ``/aliases/{alias}``, ``/revisions/{rev}``) and re-split the id at the
first ``/revisions/`` where a file path could hold the same words."""
