//! Interop with a third-party Modbus stack: adit's collector reads a pymodbus
//! server (`tests/interop/pymodbus_server.py`, values encoded with Python's
//! struct module) holding known values in every type and word order, and must
//! get every one of them exactly. `tests/run.sh` installs pymodbus from `PyPI`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use adit::app::{App, HttpBind};
use adit_core::{Quality, Value};

/// The pymodbus server process; killed when dropped.
struct PyServer(Child);

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_pymodbus(port: u16) -> PyServer {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/pymodbus_server.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 must be installed (tests/run.sh installs pymodbus)");
    let stdout = child.stdout.take().unwrap();
    let server = PyServer(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    assert_eq!(
        line.trim(),
        "ready",
        "pymodbus server did not start; is pymodbus installed (pip install pymodbus==3.16.1)?"
    );
    server
}

/// (point id, table, address, type, order, extra keys, expected value)
fn expectations() -> Vec<(
    &'static str,
    &'static str,
    u16,
    &'static str,
    &'static str,
    &'static str,
    Value,
)> {
    vec![
        (
            "f32_abcd",
            "holding",
            0,
            "f32",
            "ABCD",
            "",
            Value::F64(238.5),
        ),
        (
            "f32_cdab",
            "holding",
            2,
            "f32",
            "CDAB",
            "",
            Value::F64(238.5),
        ),
        (
            "f32_badc",
            "holding",
            4,
            "f32",
            "BADC",
            "",
            Value::F64(238.5),
        ),
        (
            "f32_dcba",
            "holding",
            6,
            "f32",
            "DCBA",
            "",
            Value::F64(238.5),
        ),
        (
            "u32_abcd",
            "holding",
            8,
            "u32",
            "ABCD",
            "",
            Value::I64(3_000_000_000),
        ),
        (
            "u32_cdab",
            "holding",
            10,
            "u32",
            "CDAB",
            "",
            Value::I64(3_000_000_000),
        ),
        (
            "i32_badc",
            "holding",
            12,
            "i32",
            "BADC",
            "",
            Value::I64(-123_456),
        ),
        (
            "i32_dcba",
            "holding",
            14,
            "i32",
            "DCBA",
            "",
            Value::I64(-123_456),
        ),
        ("i16_abcd", "holding", 16, "i16", "ABCD", "", Value::I64(-2)),
        (
            "u16_abcd",
            "holding",
            17,
            "u16",
            "ABCD",
            "",
            Value::I64(65_000),
        ),
        (
            "i16_badc",
            "holding",
            18,
            "i16",
            "BADC",
            "",
            Value::I64(-300),
        ),
        (
            "f64_abcd",
            "holding",
            20,
            "f64",
            "ABCD",
            "",
            Value::F64(-12_345.678),
        ),
        (
            "f64_cdab",
            "holding",
            24,
            "f64",
            "CDAB",
            "",
            Value::F64(-12_345.678),
        ),
        (
            "f64_badc",
            "holding",
            28,
            "f64",
            "BADC",
            "",
            Value::F64(-12_345.678),
        ),
        (
            "f64_dcba",
            "holding",
            32,
            "f64",
            "DCBA",
            "",
            Value::F64(-12_345.678),
        ),
        (
            "i64_abcd",
            "holding",
            36,
            "i64",
            "ABCD",
            "",
            Value::I64(-9_876_543_210),
        ),
        (
            "u64_dcba",
            "holding",
            40,
            "u64",
            "DCBA",
            "",
            Value::F64(18_000_000_000_000_000_000u64 as f64),
        ),
        (
            "i64_cdab",
            "holding",
            44,
            "i64",
            "CDAB",
            "",
            Value::I64(-9_876_543_210),
        ),
        (
            "text_abcd",
            "holding",
            50,
            "string",
            "ABCD",
            "length = 4",
            Value::Text("TUNNEL A".into()),
        ),
        (
            "text_badc",
            "holding",
            54,
            "string",
            "BADC",
            "length = 4",
            Value::Text("TUNNEL A".into()),
        ),
        ("coil_0", "coil", 0, "bool", "ABCD", "", Value::Bool(true)),
        ("coil_1", "coil", 1, "bool", "ABCD", "", Value::Bool(false)),
        ("coil_3", "coil", 3, "bool", "ABCD", "", Value::Bool(true)),
        (
            "discrete_1",
            "discrete",
            1,
            "bool",
            "ABCD",
            "",
            Value::Bool(true),
        ),
        (
            "input_scaled",
            "input",
            0,
            "u16",
            "ABCD",
            "scale = 0.1",
            Value::F64(123.4),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_word_order_from_pymodbus_decodes_exactly() {
    let port = free_port();
    let _server = start_pymodbus(port);
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!(
        "site = \"interop\"\ndata_dir = \"{}\"\n[http]\nlisten = \"off\"\n[[device]]\nid = \"pymodbus\"\nprotocol = \"modbus_tcp\"\naddress = \"127.0.0.1:{port}\"\npoll_interval = \"200ms\"\ntimeout = \"1s\"\nmax_gap = 8\n",
        dir.path().display()
    );
    for (id, table, address, ty, order, extra, _) in expectations() {
        let _ = write!(
            text,"[[device.point]]\nid = \"{id}\"\ntable = \"{table}\"\naddress = {address}\ntype = \"{ty}\"\norder = \"{order}\"\n{extra}\n"
        );
    }
    let config = adit_config::load_str(&text, "interop.toml").unwrap_or_else(|e| panic!("{e}"));
    let app = App::start(&config, HttpBind::Required).await.unwrap();
    let registry = app.registry();
    let live = app.live();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all_read = {
            let live = live.lock().unwrap_or_else(PoisonError::into_inner);
            registry
                .iter()
                .all(|(id, _)| live.get(id).is_some_and(|s| s.readings >= 2))
        };
        if all_read {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every point was read within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let live = live.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, .., expected) in expectations() {
            let state = live.get(registry.id_of(id).unwrap()).unwrap();
            assert_eq!(state.quality, Quality::Good, "{id}");
            assert_eq!(state.value.as_ref(), Some(&expected), "{id}");
        }
    }
    assert!(app.shutdown().await);
}
