-- QuestDB schema for adit's readings (QuestDB >= 7.3; ILP protocol_version=2
-- needs QuestDB >= 9). Create it before adit's first write, so that ILP does
-- not auto-create the table without DEDUP keys.
--
-- One row per reading, written by crates/adit-sink-questdb (see its docs):
--   ts            designated timestamp: the device's time, or adit's receive
--                 time when the device clock was invalid (1970, far future)
--   point, device symbols from the config; quality good/uncertain/bad;
--                 reason comm_failure, device_exception, out_of_range, ...
--   value         the reading as a number; value_text for text points; NULL
--                 when there was no value
--   value_int     only for integers beyond ±2^53, which value would round
--                 (exact integers: coalesce(value_int, value))
--   reason_code   the Modbus exception code (or protocol status)
--   source_us     the device's own timestamp (µs since the epoch) when it is
--                 not ts (its clock was invalid); NULL when it equals ts:
--                 the device's time is coalesce(source_us, ts)
--   received_us   when adit received it; NULL when it equals ts (a Modbus
--                 reading is received when it is read: both times are one)
--                 unless the row has no other field (a line needs one), so
--                 the receive time is coalesce(received_us, ts)
--
-- Replays are idempotent and distinct samples never collapse: adit delivers
-- every spooled record at least once (after kill -9 or a database outage a
-- batch can arrive twice), and the WAL table's
-- DEDUP UPSERT KEYS(ts, point, received_us) keeps one row per sample.
-- received_us is what makes a sample unique and stable across replays:
-- adit assigns it once, when it takes the sample, and the spool keeps it.
-- Left out (NULL) when it equals ts, which is a function of the sample
-- alone, so a replay carries the same key: QuestDB keeps no null bitmap for
-- LONG columns (NULL is the value Long.MIN_VALUE) and DEDUP compares it like
-- any other. Rows written by adit versions that always wrote received_us
-- and replayed by a newer one after an upgrade are stored twice (at most
-- the spool's unacknowledged tail at the upgrade).
-- Keying on (ts, point) alone would collapse distinct samples that share a
-- device time (a PLC clock with one-second resolution polled every 200 ms
-- gives five samples per second with one ts; a stopped RTC gives one ts for
-- a whole outage) into one row.
-- Two adit instances polling the same devices take their samples at
-- different receive times, so both are kept: give each instance its own
-- table, or query with LATEST ON / SAMPLE BY.
--
-- Upgrading a table created with the old DEDUP UPSERT KEYS(ts, point):
--   ALTER TABLE readings DEDUP ENABLE UPSERT KEYS(ts, point, received_us);
--
-- Durability: QuestDB's default cairo.commit.mode=nosync survives a QuestDB
-- crash but not a power cut of the database host; set
--   cairo.commit.mode=sync
-- in server.conf where the database host can lose power without a UPS. adit
-- keeps readings in its spool until QuestDB has confirmed them, but it cannot
-- know about a confirmed commit that the database host then loses.

CREATE TABLE IF NOT EXISTS readings (
    ts           TIMESTAMP,
    point        SYMBOL CAPACITY 65536 CACHE,
    device       SYMBOL CAPACITY 4096 CACHE,
    quality      SYMBOL CAPACITY 4 CACHE,
    reason       SYMBOL CAPACITY 16 CACHE,
    value        DOUBLE,
    value_int    LONG,
    value_text   VARCHAR,
    reason_code  LONG,
    source_us    LONG,
    received_us  LONG
) TIMESTAMP(ts) PARTITION BY DAY WAL
DEDUP UPSERT KEYS(ts, point, received_us);

-- Alert history: every transition the watchdog decides (state firing or
-- resolved), written through the spool like the readings.
CREATE TABLE IF NOT EXISTS alerts (
    ts        TIMESTAMP,
    rule      SYMBOL CAPACITY 256 CACHE,
    subject   SYMBOL CAPACITY 65536 CACHE,
    state     SYMBOL CAPACITY 4 CACHE,
    severity  SYMBOL CAPACITY 4 CACHE,
    summary   VARCHAR,
    labels    VARCHAR
) TIMESTAMP(ts) PARTITION BY MONTH WAL
DEDUP UPSERT KEYS(ts, rule, subject, state);

-- "The last hour of point X":
--   SELECT ts, value, quality, reason FROM readings
--   WHERE point = 'bore_a.co_1' AND ts > dateadd('h', -1, now());
-- Latest value and quality of every point:
--   SELECT * FROM readings LATEST ON ts PARTITION BY point;
