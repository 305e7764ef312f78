"""The Textual-free data layer behind ma-top and the exporter.

`collector` (snapshots), `supervisor_source` (supervisord), `queries` (reads beyond the snapshot), `actions`
(requeue, promote, pause, process control, the audit journal), `local` (psutil), `alerts` (badge rules) and
`source` (`DataSource`, everything a screen may ask; `LiveSource`, the real one). Never imports `tui`.
"""
