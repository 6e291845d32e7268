//! `[spool]`, `[sink.*]` and `[audit]`.

use std::path::Path;

use super::{expand_env, resolve_in, Problems};
use crate::model::{
    AuditConfig, FsyncSetting, QuestDbSinkConfig, Secret, SinksConfig, SpoolSettings,
    SqliteSinkConfig, WhenFullPolicy,
};
use crate::raw::{RawAudit, RawSinks};

/// `[sink.sqlite]` and `[sink.questdb]`: at least one sink must be on.
pub(super) fn validate_sinks(
    p: &mut Problems,
    raw: Option<&RawSinks>,
    data_dir: &Path,
) -> SinksConfig {
    let rs = raw.and_then(|s| s.sqlite.as_ref());
    let sqlite_path = rs.and_then(|s| s.path.as_deref()).unwrap_or("readings.db");
    let sqlite = SqliteSinkConfig {
        path: resolve_in(data_dir, sqlite_path),
        batch_max_rows: p.int_in(
            "sink.sqlite.batch_max_rows",
            rs.and_then(|s| s.batch_max_rows),
            5000,
            1,
            1_000_000,
        ) as usize,
        batch_max_delay: p.duration(
            "sink.sqlite.batch_max_delay",
            rs.and_then(|s| s.batch_max_delay.as_deref()),
            "100ms",
            true,
        ),
    };
    let questdb = raw
        .and_then(|s| s.questdb.as_ref())
        .map(|q| QuestDbSinkConfig {
            conf: Secret::new(match p.required("sink.questdb.conf", q.conf.as_deref()) {
                Some(text) => expand_env(p, "sink.questdb.conf", text),
                None => String::new(),
            }),
            table: {
                let table = q.table.clone().unwrap_or_else(|| "readings".into());
                // QuestDB's rules for table names: a bad one would make every
                // row unencodable, i.e. every batch a permanent failure.
                let bad = table.is_empty()
                    || table.len() > 127
                    || table.starts_with('.')
                    || table.ends_with('.')
                    || table.contains("..")
                    || table.chars().any(|c| {
                        c.is_control()
                            || matches!(
                                c,
                                '?' | ',' | '\'' | '"' | '\\' | '/' | ':' | ')' | '(' | '+' | '*' | '%' | '~' | '\u{feff}'
                            )
                    });
                if bad {
                    p.push(
                        "sink.questdb.table",
                        format!("{table:?} is not a valid QuestDB table name (letters, digits, _ - and single dots)"),
                    );
                }
                table
            },
            batch_max_rows: p.int_in(
                "sink.questdb.batch_max_rows",
                q.batch_max_rows,
                10_000,
                1,
                1_000_000,
            ) as usize,
            batch_max_delay: p.duration(
                "sink.questdb.batch_max_delay",
                q.batch_max_delay.as_deref(),
                "100ms",
                true,
            ),
        });
    let sqlite_enabled = rs.and_then(|s| s.enabled).unwrap_or(true);
    if !sqlite_enabled && questdb.is_none() {
        p.push(
            "sink.sqlite.enabled",
            "no sink left: enable sqlite or configure [sink.questdb]",
        );
    }
    SinksConfig {
        sqlite: sqlite_enabled.then_some(sqlite),
        questdb,
    }
}

/// `[audit]`.
pub(super) fn validate_audit(
    p: &mut Problems,
    ra: Option<&RawAudit>,
    data_dir: &Path,
) -> AuditConfig {
    AuditConfig {
        dir: resolve_in(
            data_dir,
            ra.and_then(|a| a.dir.as_deref()).unwrap_or("audit"),
        ),
        max_file_size: match crate::human::parse_size(
            ra.and_then(|a| a.max_file_size.as_deref())
                .unwrap_or("16 MiB"),
        ) {
            Ok(n) if n >= 4096 => n,
            Ok(n) => {
                p.push(
                    "audit.max_file_size",
                    format!("{n} bytes is below the minimum of 4096"),
                );
                4096
            }
            Err(e) => {
                p.push("audit.max_file_size", e);
                4096
            }
        },
    }
}

pub(super) fn validate_spool(
    p: &mut Problems,
    raw: Option<&crate::raw::RawSpool>,
    data_dir: &Path,
) -> SpoolSettings {
    let size = |p: &mut Problems, key: &str, value: Option<&str>, default: &str, min: u64| {
        let text = value.unwrap_or(default);
        match crate::human::parse_size(text) {
            Ok(n) if n >= min => n,
            Ok(n) => {
                p.push(
                    format!("spool.{key}"),
                    format!("{n} bytes is below the minimum of {min}"),
                );
                min
            }
            Err(e) => {
                p.push(format!("spool.{key}"), e);
                min
            }
        }
    };
    let segment_size = size(
        p,
        "segment_size",
        raw.and_then(|r| r.segment_size.as_deref()),
        "64 MiB",
        64 * 1024,
    );
    let max_size = size(
        p,
        "max_size",
        raw.and_then(|r| r.max_size.as_deref()),
        "2 GiB",
        1024 * 1024,
    );
    if max_size < 2 * segment_size {
        p.push(
            "spool.max_size",
            "must be at least twice spool.segment_size",
        );
    }
    let when_full = match raw
        .and_then(|r| r.when_full.as_deref())
        .unwrap_or("drop_oldest")
    {
        "block" => WhenFullPolicy::Block,
        "drop_oldest" => WhenFullPolicy::DropOldest,
        "drop_newest" => WhenFullPolicy::DropNewest,
        other => {
            p.push(
                "spool.when_full",
                format!("unknown policy {other:?}; expected block, drop_oldest or drop_newest"),
            );
            WhenFullPolicy::DropOldest
        }
    };
    let interval = p.duration(
        "spool.fsync_interval",
        raw.and_then(|r| r.fsync_interval.as_deref()),
        "100ms",
        true,
    );
    let fsync = match raw.and_then(|r| r.fsync.as_deref()).unwrap_or("interval") {
        "always" => FsyncSetting::Always,
        "interval" => FsyncSetting::Interval(interval),
        "never" => FsyncSetting::Never,
        other => {
            p.push(
                "spool.fsync",
                format!("unknown policy {other:?}; expected always, interval or never"),
            );
            FsyncSetting::Interval(interval)
        }
    };
    SpoolSettings {
        dir: resolve_in(
            data_dir,
            raw.and_then(|r| r.dir.as_deref()).unwrap_or("spool"),
        ),
        segment_size,
        max_size,
        when_full,
        fsync,
    }
}
