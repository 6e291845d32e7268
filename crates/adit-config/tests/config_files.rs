//! Every example config loads; every broken config produces exactly the error
//! text in its `.expected` golden file (regenerate with `ADIT_BLESS=1`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_config_loads_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let files = files_in(&dir, "toml");
    assert!(
        files.len() >= 2,
        "expected the demo and the site examples in {}",
        dir.display()
    );
    for file in files {
        let config =
            adit_config::load_file(&file).unwrap_or_else(|e| panic!("{}:\n{e}", file.display()));
        assert!(config.point_count() > 0, "{}", file.display());
    }
}

#[test]
fn broken_configs_report_exactly_the_golden_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken");
    let bless = std::env::var_os("ADIT_BLESS").is_some();
    let files = files_in(&dir, "toml");
    assert!(files.len() >= 6);
    for file in files {
        let name = format!("broken/{}", file.file_name().unwrap().to_string_lossy());
        let source = std::fs::read_to_string(&file).unwrap();
        let errors = match adit_config::load_str(&source, &name) {
            Ok(_) => panic!("{name} should not load"),
            Err(e) => format!("{e}\n"),
        };
        let golden = file.with_extension("expected");
        if bless {
            std::fs::write(&golden, &errors).unwrap();
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        assert_eq!(
            errors,
            expected,
            "{name}: errors differ from {}",
            golden.display()
        );
    }
}

#[test]
fn secrets_come_from_the_environment_and_are_never_printed() {
    // A variable name unique to this test, set only here.
    std::env::set_var("ADIT_TEST_QUESTDB_PASSWORD", "hunter2");
    let text = "[sink.questdb]\nconf = \"http::addr=db:9000;username=adit;password=${ADIT_TEST_QUESTDB_PASSWORD};\"\n[[device]]\nid = \"plc\"\nprotocol = \"modbus_tcp\"\naddress = \"127.0.0.1:502\"\n[[device.point]]\nid = \"co\"\ntable = \"holding\"\naddress = 0\n";
    let config = adit_config::load_str(text, "secret.toml").unwrap();
    let q = config.sinks.questdb.as_ref().unwrap();
    assert_eq!(
        q.conf.expose(),
        "http::addr=db:9000;username=adit;password=hunter2;"
    );
    assert!(
        !format!("{config:?}").contains("hunter2"),
        "the secret must not appear in Debug output"
    );
}
