"""Service registry (:8070): discovers model workers and polls their health and GPU statistics."""
