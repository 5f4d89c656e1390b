"""Work a leader does in the background: leases, outbox, supervisor, readiness watch."""
