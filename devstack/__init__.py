"""Local engines and service doubles for a laptop or CI. Never imported by pool/handlers/tui at run time."""
