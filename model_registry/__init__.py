"""Model registry (:8090): mirrors models into object storage with revisions and checksums."""
