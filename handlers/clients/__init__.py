"""HTTP clients the handlers use. Built once per process by the pool and handed over in the context."""
