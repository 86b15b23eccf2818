-- The live poll asks for max(devices.connection_at) every second, so that a device's new status
-- (an error with no new sample) reaches the open pages, the fleet console among them; the index
-- answers it from one page instead of a scan of every device. connection_at changes only when a
-- device's status does (not on every flush), so the index costs the hot updates of last_seen_at
-- nothing.
CREATE INDEX IF NOT EXISTS devices_connection_at ON devices (connection_at);
