"""Widgets of ma-top's screens that hold more than a table: the findings pane, the recent-events strip."""
