"""Tests of the A/B experiments: assignment (pure), statistics, reports."""
