"""The pool: one OS process per queue slot, each running one bullmq.Worker under supervisord."""
