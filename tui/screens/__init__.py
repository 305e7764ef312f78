"""ma-top's screens, one module per view; they only render the app's state and turn keys into calls on
its `DataSource`."""

from tui.screens.bulk import BulkScreen
from tui.screens.events import EventsScreen
from tui.screens.failures import FailuresScreen
from tui.screens.job_detail import JobScreen
from tui.screens.modals import ConfirmScreen, HelpScreen
from tui.screens.processes import ProcessesScreen
from tui.screens.queue_jobs import QueueScreen
from tui.screens.queues import QueuesScreen
from tui.screens.redis_health import RedisScreen
from tui.screens.schedulers import SchedulersScreen

__all__ = [
    "BulkScreen",
    "ConfirmScreen",
    "EventsScreen",
    "FailuresScreen",
    "HelpScreen",
    "JobScreen",
    "ProcessesScreen",
    "QueueScreen",
    "QueuesScreen",
    "RedisScreen",
    "SchedulersScreen",
]
