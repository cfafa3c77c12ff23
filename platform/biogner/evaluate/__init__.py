"""Evaluation: strict scoring, batch generation on Ray Data, reports."""
