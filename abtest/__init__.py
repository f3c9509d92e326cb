"""A/B experiments: assignment, statistics, reports. Built by the experiments issue."""
