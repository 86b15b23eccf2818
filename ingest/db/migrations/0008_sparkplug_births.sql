-- Sparkplug B births the ingest has followed (ingest/sparkplug.py): each edge node's and device's
-- alias table and datatypes, so a restarted ingest decodes alias-only data at once instead of
-- holding it until the node answers a rebirth request. A death deletes its rows.
CREATE TABLE sparkplug_births (
    group_id    text NOT NULL,
    node_id     text NOT NULL,
    device      text NOT NULL,          -- Sparkplug device id; '' for the node's own NBIRTH
    bdseq       integer NOT NULL,       -- the node's session (NBIRTH/NDEATH bdSeq)
    aliases     jsonb NOT NULL,         -- {"<alias>": "<metric name>"}
    datatypes   jsonb NOT NULL,         -- {"<metric name>": <Sparkplug datatype>}
    born_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, node_id, device)
);
