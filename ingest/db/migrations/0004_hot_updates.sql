-- Tables updated in place on every flush keep free space in each page, so PostgreSQL can update
-- rows as heap-only tuples (HOT: no index writes) instead of moving them.
ALTER TABLE current_values SET (fillfactor = 70);
ALTER TABLE counter_state SET (fillfactor = 70);
ALTER TABLE device_states SET (fillfactor = 70);
ALTER TABLE gateway_boots SET (fillfactor = 70);
