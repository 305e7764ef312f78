"""The business: one module per queue, each exposing `HANDLERS = {"job.name": handler}`.

A handler is `async def handle(ctx: JobContext, payload: SomeModel) -> result`; the dispatcher
reads the payload model from the annotation and validates `job.data` into it before the call.
"""
