-- Each device's newest sample time and alarm flag, one row per device: what "online now",
-- "networked" and the alarm counts of a city, segment or district page need, without reading
-- current_values (one row per device and signal, 12 per device in bench/monitoring.py: 120,000
-- rows and most of the overview's time at 10,000 devices).
--
-- Kept by statement triggers on current_values, so every writer (the ingest's flush, Sparkplug,
-- a repair by hand) keeps it exact, and one set-based upsert per statement is all it costs:
--   last_seen = max(current_values.ts) of the device (current_values.ts never goes back);
--   alarm     = any of the device's alarm_active signals' current value is non-zero
--               (NULL when the device has no such signal).
CREATE TABLE device_presence (
    device_key  integer PRIMARY KEY,
    last_seen   timestamptz NOT NULL,
    alarm       boolean
);

INSERT INTO device_presence (device_key, last_seen, alarm)
SELECT cv.device_key, max(cv.ts),
       bool_or(cv.value <> 0) FILTER (WHERE g.id IS NOT NULL)
FROM current_values cv
LEFT JOIN signals g ON g.id = cv.signal_id AND g.base = 'alarm_active'
GROUP BY cv.device_key;

CREATE FUNCTION note_device_presence() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO device_presence AS p (device_key, last_seen)
    SELECT n.device_key, max(n.ts) FROM changed n GROUP BY n.device_key ORDER BY n.device_key
    ON CONFLICT (device_key) DO UPDATE SET last_seen = excluded.last_seen
    WHERE excluded.last_seen > p.last_seen;
    -- The alarm flag is recomputed from the device's alarm signals only where one changed.
    UPDATE device_presence p
    SET alarm = (SELECT bool_or(cv.value <> 0)
                 FROM current_values cv JOIN signals g ON g.id = cv.signal_id
                 WHERE cv.device_key = p.device_key AND g.base = 'alarm_active')
    WHERE p.device_key IN (SELECT n.device_key FROM changed n
                           JOIN signals g ON g.id = n.signal_id AND g.base = 'alarm_active');
    RETURN NULL;
END
$$;

-- A trigger with transition tables fires on one event only: one for the inserted rows, one for
-- the updated ones (an upsert fires both, each with its own rows).
CREATE TRIGGER current_values_presence_insert AFTER INSERT ON current_values
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION note_device_presence();
CREATE TRIGGER current_values_presence_update AFTER UPDATE ON current_values
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION note_device_presence();
