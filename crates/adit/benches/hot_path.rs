//! Micro-benchmarks of every step a reading takes, each reported per reading
//! (criterion's "elements"), and the chained core the issue's first goal is
//! about: normalize → live state → spool append (no fsync) → ILP encode.
//!
//! ```text
//! cargo bench -p adit --bench hot_path            # all
//! cargo bench -p adit --bench hot_path -- chained # one
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adit_config::{DataType, PointConfig, Table, WordOrder};
use adit_core::{PointId, PointMeta, PointRegistry, Quality, Reading, Timestamp, Value};
use adit_modbus::plan::{plan_reads, PlannedRead, PointSpan};
use adit_modbus::poll::{decode_read, ReadData};
use adit_pipeline::{normalize_batch, ClockRules, LiveState, Ranges, Sink};
use adit_sink_questdb::ilp::{IlpVersion, RowBuffer};
use adit_spool::{FsyncPolicy, Spool, SpoolConfig, WhenFull};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// Readings per batch in every benchmark (a collector's poll of a big device
/// or the pipeline's batching under load).
const BATCH: usize = 1000;
const POINTS: u32 = 10_000;

fn registry() -> Arc<PointRegistry> {
    let mut r = PointRegistry::new();
    for i in 0..POINTS {
        let mut meta = PointMeta::plain(
            &format!("bore_{}.co.km{i}", i % 2),
            &format!("plc{}", i / 100),
            1000,
        );
        meta.range = Some((0.0, 300.0));
        meta.unit = "ppm".into();
        r.insert(meta).unwrap();
    }
    Arc::new(r)
}

fn batch(offset: u32, now: Timestamp) -> Vec<Reading> {
    (0..BATCH as u32)
        .map(|i| Reading {
            point: PointId((offset + i) % POINTS),
            value: Some(Value::F64(20.0 + f64::from(i % 50))),
            quality: Quality::Good,
            source_ts: now,
            received_ts: now,
        })
        .collect()
}

fn clock() -> ClockRules {
    ClockRules {
        max_future_skew: Duration::from_secs(300),
        max_age: Duration::from_secs(86_400),
    }
}

fn spool(dir: &std::path::Path, registry: &PointRegistry) -> Spool {
    let cfg = SpoolConfig {
        dir: dir.join("spool"),
        segment_bytes: 16 << 20,
        max_bytes: 256 << 20,
        when_full: WhenFull::DropOldest,
        fsync: FsyncPolicy::Never,
        faults: None,
    };
    Spool::open(cfg, registry, &["bench"]).unwrap().0
}

fn modbus_points(n: u16) -> Vec<PointConfig> {
    (0..n)
        .map(|i| PointConfig {
            id: format!("p{i}"),
            address: adit_config::PointAddress::Modbus(adit_config::ModbusAddress {
                table: Table::HoldingRegister,
                address: i * 2,
                data_type: DataType::F32,
                order: WordOrder::Cdab,
                bit: None,
            }),
            scale: 1.0,
            offset: 0.0,
            unit: String::new(),
            range: None,
            interval: Duration::from_secs(1),
            deadband: None,
            deadband_heartbeat: Duration::from_secs(60),
            stale_after: Duration::from_secs(3),
            description: String::new(),
        })
        .collect()
}

fn steps(c: &mut Criterion) {
    let registry = registry();
    let now = Timestamp::now();

    let mut g = c.benchmark_group("per_reading");
    g.throughput(Throughput::Elements(BATCH as u64));

    // Modbus: 62 f32 points in one 124-register answer, decoded.
    let points: Vec<adit_modbus::poll::DecodePoint> = modbus_points(62)
        .iter()
        .filter_map(adit_modbus::poll::DecodePoint::of)
        .collect();
    let read = PlannedRead {
        table: Table::HoldingRegister,
        start: 0,
        count: 124,
        points: (0..62).map(|i| (usize::from(i), i * 2)).collect(),
    };
    let ids: Vec<PointId> = (0..62).map(PointId).collect();
    let words: Vec<u16> = (0..124).map(|i| 0x4120 + i).collect();
    let mut out = Vec::with_capacity(62);
    g.throughput(Throughput::Elements(62));
    g.bench_function("modbus_decode", |b| {
        b.iter(|| {
            out.clear();
            decode_read(&read, ReadData::Words(&words), &points, &ids, now, &mut out);
            black_box(out.len())
        });
    });

    // Request planning for a device of 1000 scattered points.
    let spans: Vec<PointSpan> = (0..1000u16)
        .map(|i| PointSpan {
            table: if i % 3 == 0 {
                Table::InputRegister
            } else {
                Table::HoldingRegister
            },
            address: i * 3,
            width: 1 + (i % 2),
        })
        .collect();
    g.throughput(Throughput::Elements(1000));
    g.bench_function("plan_reads", |b| {
        b.iter(|| {
            black_box(
                plan_reads(&spans, 125, 2, &[(60_000, 60_100)])
                    .unwrap()
                    .len(),
            )
        });
    });

    g.throughput(Throughput::Elements(BATCH as u64));
    let ranges = Ranges::new(&registry);
    g.bench_function("normalize", |b| {
        b.iter_batched_ref(
            || batch(0, now),
            |bt| black_box(normalize_batch(bt, &ranges, clock(), now)),
            BatchSize::SmallInput,
        );
    });

    let mut live = LiveState::new(&registry);
    let input = batch(0, now);
    let start = Instant::now();
    g.bench_function("live_state_update", |b| {
        b.iter(|| live.apply(black_box(&input), start));
    });

    let dir = tempfile::tempdir().unwrap();
    let sp = spool(dir.path(), &registry);
    g.bench_function("spool_append_no_fsync", |b| {
        b.iter(|| sp.append(black_box(&input)).unwrap());
    });
    drop(sp);

    // The same rows through questdb-rs's row API (the tcp/https writer) and
    // adit's own encoder (the http writer): byte-identical output.
    for (name, version) in [
        (
            "ilp_encode_questdb_rs_v1",
            questdb::ingress::ProtocolVersion::V1,
        ),
        (
            "ilp_encode_questdb_rs_v2",
            questdb::ingress::ProtocolVersion::V2,
        ),
    ] {
        let mut buffer = questdb::ingress::Buffer::new(version);
        g.bench_function(name, |b| {
            b.iter(|| {
                buffer.clear();
                adit_sink_questdb::encode_rows(
                    &mut buffer,
                    "readings",
                    &registry,
                    black_box(&input),
                )
                .unwrap();
                black_box(buffer.len())
            });
        });
    }
    for (name, version) in [
        ("ilp_encode_v1", IlpVersion::V1),
        ("ilp_encode_v2", IlpVersion::V2),
    ] {
        let mut rows = RowBuffer::new(version, "readings");
        g.bench_function(name, |b| {
            b.iter(|| {
                rows.clear();
                rows.encode_up_to(&registry, black_box(&input), usize::MAX)
                    .unwrap();
                black_box(rows.len())
            });
        });
    }

    let db_dir = tempfile::tempdir().unwrap();
    let mut sqlite = adit_sink_sqlite::SqliteSink::open(
        &db_dir.path().join("bench.db"),
        &registry,
        adit_sink_sqlite::Durability::ProcessCrash,
    )
    .unwrap();
    let mut tick = 0i64;
    g.bench_function("sqlite_write", |b| {
        b.iter_batched(
            || {
                tick += 1;
                batch(0, Timestamp(now.0 + tick))
            },
            |bt| sqlite.write(&bt).unwrap(),
            BatchSize::SmallInput,
        );
    });

    let rules = ["CoHigh", "CoSpike", "CoStuck"];
    let conditions = [
        adit_watchdog::rules::Condition::Above {
            raise: 70.0,
            clear: 60.0,
        },
        adit_watchdog::rules::Condition::Rate {
            max_per_second: 50.0,
        },
        adit_watchdog::rules::Condition::Flatline { samples: 30 },
    ];
    let specs = rules
        .iter()
        .zip(conditions)
        .map(|(name, condition)| adit_watchdog::RuleSpec {
            name: (*name).into(),
            points: "*.co.*".into(),
            condition,
            hold: Duration::ZERO,
            severity: "warning".into(),
            check_first: String::new(),
            runbook: None,
        })
        .collect();
    let mut engine = adit_watchdog::Engine::new(
        "bench",
        specs,
        registry.clone(),
        adit_audit::Audit::disabled(),
    );
    g.bench_function("rule_eval_3_rules", |b| {
        b.iter(|| black_box(engine.observe(black_box(&input), start).len()));
    });
    g.finish();
}

/// normalize → live state → spool append (no fsync) → ILP encode, on one
/// core: the issue's goal is ≥ 2,000,000 readings/s (≤ 500 ns per reading).
fn chained(c: &mut Criterion) {
    let registry = registry();
    let now = Timestamp::now();
    let dir = tempfile::tempdir().unwrap();
    let sp = spool(dir.path(), &registry);
    let ranges = Ranges::new(&registry);
    let mut live = LiveState::new(&registry);
    let mut rows = RowBuffer::new(IlpVersion::V2, "readings");
    let start = Instant::now();
    let mut g = c.benchmark_group("chained");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("normalize_live_spool_ilp", |b| {
        b.iter_batched_ref(
            || batch(0, now),
            |bt| {
                normalize_batch(bt, &ranges, clock(), now);
                live.apply(bt, start);
                sp.append(bt).unwrap();
                rows.clear();
                rows.encode_up_to(&registry, bt, usize::MAX).unwrap();
                black_box(rows.len())
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

/// One MQTT message through the collector's pure part (topic template,
/// payload decoding, point naming): a 100-byte JSON message, and a Sparkplug
/// DDATA of 20 metrics by alias. Reported per message.
fn mqtt(c: &mut Criterion) {
    use adit_mqtt::mapping::{Effects, Mapper};
    use adit_mqtt::sparkplug::proto::{datatype, Metric, MetricValue, Payload};
    use prost::Message as _;

    let config = adit_config::load_str(
        "[[device]]\nid = \"edge\"\nprotocol = \"mqtt\"\nbroker = \"mqtt://127.0.0.1:1883\"\n\
         [[device.subscription]]\nfilter = \"tunnel/+/sensors/+\"\ntemplate = \"tunnel/{bore}/sensors/{sensor}\"\n\
         point = \"{bore}.{sensor}\"\ntimestamp = \"/ts\"\n\
         [[device.subscription]]\nfilter = \"spBv1.0/t/#\"\nformat = \"sparkplug\"\n",
        "bench.toml",
    )
    .unwrap();
    let registry = Arc::new(PointRegistry::with_max_points(10_000));
    let refused = prometheus::IntCounter::new("refused", "refused").unwrap();
    let registrar = adit_pipeline::PointRegistrar::new(registry, refused, Arc::new(|_, _| {}));
    let mut mapper = Mapper::new(&config.devices[0], &[]);
    let now = Timestamp::now();
    let json = br#"{"value": 12.375, "ts": 1790000000123, "unit": "ppm", "seq": 123456, "pad": "xxxxxxxxxxxxx"}"#;
    let (mut out, mut fx) = (Vec::with_capacity(64), Effects::default());
    let mut g = c.benchmark_group("mqtt_message");
    g.throughput(Throughput::Elements(1));
    g.bench_function("json_100_bytes", |b| {
        b.iter(|| {
            out.clear();
            mapper.map(
                "tunnel/north/sensors/co",
                black_box(json),
                now,
                false,
                &registrar,
                &mut out,
                &mut fx,
            );
            black_box(out.len())
        });
    });
    let metrics = |alias_only: bool| -> Vec<Metric> {
        (0..20u64)
            .map(|m| {
                let mut metric = Metric::new(
                    &format!("m{m}"),
                    Some(m + 1),
                    datatype::DOUBLE,
                    MetricValue::Double(m as f64 * 1.5),
                );
                if alias_only {
                    metric.name = None;
                }
                metric.timestamp = Some(1_790_000_000_000);
                metric
            })
            .collect()
    };
    let encode = |metrics: Vec<Metric>, seq: u64| {
        Payload {
            timestamp: Some(1_790_000_000_000),
            metrics,
            seq: Some(seq),
            uuid: None,
            body: None,
        }
        .encode_to_vec()
    };
    let nbirth = encode(
        vec![Metric::new(
            "bdSeq",
            None,
            datatype::INT64,
            MetricValue::Long(0),
        )],
        0,
    );
    let (mut out2, mut fx2) = (Vec::new(), Effects::default());
    mapper.map(
        "spBv1.0/t/NBIRTH/n1",
        &nbirth,
        now,
        false,
        &registrar,
        &mut out2,
        &mut fx2,
    );
    mapper.map(
        "spBv1.0/t/DBIRTH/n1/d1",
        &encode(metrics(false), 1),
        now,
        false,
        &registrar,
        &mut out2,
        &mut fx2,
    );
    // Sequence numbers continue from 2; one payload per seq value.
    let ddata: Vec<Vec<u8>> = (0..256u64).map(|s| encode(metrics(true), s)).collect();
    let mut seq = 2usize;
    g.bench_function("sparkplug_ddata_20_metrics", |b| {
        b.iter(|| {
            out.clear();
            mapper.map(
                "spBv1.0/t/DDATA/n1/d1",
                black_box(&ddata[seq % 256]),
                now,
                false,
                &registrar,
                &mut out,
                &mut fx,
            );
            seq += 1;
            black_box(out.len())
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = steps, chained, mqtt
}
criterion_main!(benches);
