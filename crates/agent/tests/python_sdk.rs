//! The Python SDK's own unit tests (`sdk/python/tests`, `unittest`), run as part of the
//! workspace's test command so that `cargo nextest run` is the whole gate.

use std::path::Path;
use std::process::Command;

#[test]
fn python_sdk_unit_tests_pass() {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/python");
    let out = Command::new("python3")
        .args(["-B", "-m", "unittest", "discover", "-s", "tests", "-t", "."])
        .current_dir(&sdk)
        .output()
        .expect("python3 must be installed to test the Python SDK");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python3 -m unittest failed:\n{stderr}"
    );
    // unittest prints "Ran N tests" and "OK"; make sure the suite was found and ran.
    assert!(
        stderr.contains("Ran ") && !stderr.contains("Ran 0 tests"),
        "{stderr}"
    );
}
