"""Memory-comparison reports: `edgeag compare` (isolated training runs per optimizer,
and the capacity sweep) and `edgeag report` (one table from several devices).

`runs` rows, seeds, the device and child processes; `compare` the training runs;
`capacity` the width search; `render` report.json, report.md and the figures
(`plots`, the only module that imports matplotlib); `merge` reports from several
devices; `launch` the commands' input handling; `stats` the statistics of a handful of
runs (IQM, median and mean with stratified-bootstrap intervals, probability of
improvement, performance profiles); `studies` reading ``edgeag tune`` studies back.
"""
