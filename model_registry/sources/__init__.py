"""Where models come from: a local folder, the Hugging Face Hub (or a mirror), and bundles.

Each source is a plain blocking function over a ``Catalog`` and a ``Progress``, so the background
jobs of the API and the ``model-service models`` CLI run exactly the same code.
"""
