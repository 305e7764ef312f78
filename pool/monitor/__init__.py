"""The Textual-free data layer behind ma-top and the exporter.

`collector` (snapshots), `supervisor_source` (supervisord), `queries` (reads beyond the snapshot), `actions`
(requeue, promote, pause, process control, the audit journal), `local` (psutil), `history` (recent counters) and
`findings` (what is wrong and why: the one rule set behind ma-top's badges, `--once` and `ma_finding`), and
`source` (`DataSource`, everything a screen may ask; `LiveSource`, the real one). Never imports `tui`.
"""
