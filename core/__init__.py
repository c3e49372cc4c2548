"""Cold Harbour core: pure domain, analytics, settings and schema. No broker, web or long-running I/O."""
