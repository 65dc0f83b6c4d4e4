//! Processors (agent-protocol §5) against independent implementations: the Python `thrift`
//! package decodes the agent's `runProcessor` call (proving the wire format and the field
//! ids), and Python's `http.server` receives the HTTP deliveries. Both servers are the
//! Python SDK's helpers (`sdk/python/elves_app/processor.py`).

use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

#[path = "support/python_server.rs"]
mod python_server;

use elves_agent::processor::{self, Delivery, Ins, Options, Processors, Target};
use tokio_util::sync::CancellationToken;

const SERVER: &str = r#"
import json, sys
sys.path.insert(0, sys.argv[3])
from elves_app import processor
kind, port = sys.argv[1], int(sys.argv[2])
def handler(ins, flag, costtime, result):
    print(json.dumps({"ins": ins, "flag": flag, "costtime": costtime, "result": result}), flush=True)
if kind == "thrift":
    s = processor.make_thrift_server(handler, "127.0.0.1", port)
    s.serverTransport.listen()
    port = s.serverTransport.handle.getsockname()[1]
    s.serverTransport.listen = lambda: None
    print("PORT %d" % port, flush=True)
    s.serve()
else:
    s = processor.make_http_server(handler, "127.0.0.1", port, "/result")
    print("PORT %d" % s.server_address[1], flush=True)
    s.serve_forever()
"#;

/// A Python processor server; killed on drop.
struct PyServer {
    child: Child,
    lines: mpsc::Receiver<String>,
    port: u16,
}

impl PyServer {
    fn start(kind: &str, port: u16) -> PyServer {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/python");
        let mut cmd = Command::new("python3");
        cmd.args(["-B", "-c", SERVER, kind, &port.to_string()])
            .arg(&sdk);
        let (child, lines, port) = python_server::spawn(
            cmd,
            "the Python server did not start (is the `thrift` package installed? pip install thrift)",
        );
        PyServer { child, lines, port }
    }

    fn next(&self, limit: Duration) -> Option<Delivery> {
        let line = self.lines.recv_timeout(limit).ok()?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}")))
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn delivery(id: &str) -> Delivery {
    Delivery {
        ins: Ins {
            id: id.into(),
            ip: "127.0.0.2".into(),
            kind: "queue".into(),
            mode: "P".into(),
            app: "procapp".into(),
            func: "échange".into(),
            param: "{\"msg\":\"中文 \\\"quoted\\\"\\n\"}".into(),
            timeout: 17,
            proxy: "python3|w.py".into(),
        },
        flag: -1,
        costtime: 123_456,
        result: "résultat\nline two <b>".into(),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn thrift_run_processor_is_decoded_by_the_python_thrift_package() {
    let server = PyServer::start("thrift", 0);
    let d = delivery("00000000000000C1");
    let answer = processor::call_thrift("127.0.0.1", server.port, &d).await;
    assert_eq!(answer, Ok("success".to_owned()));
    assert_eq!(server.next(Duration::from_secs(10)), Some(d));
    // A second call on a new connection works too (sequence ids differ).
    let d2 = Delivery {
        flag: 1,
        ..delivery("00000000000000C2")
    };
    let answer = processor::call_thrift("127.0.0.1", server.port, &d2).await;
    assert_eq!(answer, Ok("success".to_owned()));
    assert_eq!(server.next(Duration::from_secs(10)), Some(d2));
}

#[tokio::test(flavor = "multi_thread")]
async fn http_processor_gets_the_delivery_as_json() {
    let server = PyServer::start("http", 0);
    let d = delivery("00000000000000D1");
    let client = reqwest::Client::new();
    let target = Target::Http {
        url: format!("http://127.0.0.1:{}/result", server.port),
        timeout: Duration::from_secs(10),
    };
    assert_eq!(
        processor::deliver(&client, &target, &d).await,
        Ok("success".into())
    );
    assert_eq!(server.next(Duration::from_secs(10)), Some(d));
    // A wrong path is a 404: an error (the delivery would be retried), not a success.
    let wrong = Target::Http {
        url: format!("http://127.0.0.1:{}/other", server.port),
        timeout: Duration::from_secs(10),
    };
    let e = processor::deliver(&client, &wrong, &delivery("00000000000000D2"))
        .await
        .unwrap_err();
    assert!(e.contains("404"), "{e}");
}

/// A spooled delivery to a processor that is down arrives once it comes up, for both kinds.
#[tokio::test(flavor = "multi_thread")]
async fn results_reach_a_processor_that_comes_back() {
    for kind in ["thrift", "http"] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let appcfg = if kind == "thrift" {
            format!(r#"{{"Processor":{{"Addr":"127.0.0.1","Port":{port},"Timeout":5}}}}"#)
        } else {
            format!(r#"{{"Processor":{{"Url":"http://127.0.0.1:{port}/result","Timeout":5}}}}"#)
        };
        let app_dir = dir.path().join("apps/procapp");
        std::fs::create_dir_all(&app_dir).unwrap();
        std::fs::write(app_dir.join("appcfg.json"), appcfg).unwrap();
        let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let e2 = errors.clone();
        let procs = std::sync::Arc::new(
            Processors::open(
                Options {
                    dir: dir.path().join("spool"),
                    apps_dir: dir.path().join("apps"),
                    retry_base: Duration::from_millis(50),
                    retry_cap: Duration::from_millis(300),
                },
                Box::new(move |e| e2.lock().unwrap().push(e.to_owned())),
            )
            .unwrap(),
        );
        let cancel = CancellationToken::new();
        let runner = tokio::spawn({
            let p = procs.clone();
            let c = cancel.clone();
            async move { p.run(c).await }
        });
        let d1 = delivery("00000000000000E1");
        let d2 = delivery("00000000000000E2");
        procs.submit(&d1);
        procs.submit(&d2);
        // Down: the deliveries stay spooled and the failure is reported.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(procs.pending_count(), 2, "{kind}");
        assert!(
            errors
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.contains("will retry")),
            "{kind}: {:?}",
            errors.lock().unwrap()
        );
        // Up: both arrive, in order, and the spool empties.
        let server = tokio::task::spawn_blocking(move || PyServer::start(kind, port))
            .await
            .unwrap();
        assert_eq!(
            server.next(Duration::from_secs(15)).as_ref(),
            Some(&d1),
            "{kind}"
        );
        assert_eq!(
            server.next(Duration::from_secs(15)).as_ref(),
            Some(&d2),
            "{kind}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while procs.pending_count() != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{kind}: spool not emptied"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
        runner.await.unwrap();
    }
}

#[tokio::test]
async fn a_broken_appcfg_drops_the_delivery_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let app_dir = dir.path().join("apps/procapp");
    std::fs::create_dir_all(&app_dir).unwrap();
    std::fs::write(app_dir.join("appcfg.json"), "{\"Processor\": ").unwrap();
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let e2 = errors.clone();
    let procs = Processors::open(
        Options {
            dir: dir.path().join("spool"),
            apps_dir: dir.path().join("apps"),
            retry_base: Duration::from_millis(50),
            retry_cap: Duration::from_millis(300),
        },
        Box::new(move |e| e2.lock().unwrap().push(e.to_owned())),
    )
    .unwrap();
    procs.submit(&delivery("00000000000000F1"));
    assert_eq!(procs.pending_count(), 1);
    assert_eq!(procs.pass().await, None);
    assert_eq!(procs.pending_count(), 0);
    let errors = errors.lock().unwrap();
    assert!(
        errors.len() == 1 && errors[0].contains("appcfg.json is not JSON"),
        "{errors:?}"
    );
}
