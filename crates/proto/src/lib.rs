//! The agent ⇄ center wire protocol (`proto/agent.proto`).
//!
//! The Rust code in `src/gen/` is generated from the `.proto` with `protox` and
//! `tonic-prost-build` and committed, so building needs no `protoc`. The test
//! `generated_code_is_up_to_date` regenerates it and fails on drift; run it with
//! `ELVES_REGENERATE=1` to rewrite the committed file.

#[rustfmt::skip]
#[allow(clippy::all, clippy::pedantic)]
mod generated {
    include!("gen/elves.agent.v1.rs");
}

pub use generated::*;

/// The metadata key carrying the agent's identity on `Link`.
pub const IP_HEADER: &str = "x-elves-ip";

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn generated_code_is_up_to_date() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let fds = protox::compile([root.join("proto/agent.proto")], [root.join("proto")]).unwrap();
        let out = tempfile::tempdir().unwrap();
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .out_dir(out.path())
            .compile_fds(fds)
            .unwrap();
        let fresh = std::fs::read_to_string(out.path().join("elves.agent.v1.rs")).unwrap();
        let committed_path = root.join("src/gen/elves.agent.v1.rs");
        if std::env::var_os("ELVES_REGENERATE").is_some() {
            std::fs::write(&committed_path, &fresh).unwrap();
        }
        let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
        assert!(
            fresh == committed,
            "src/gen is stale: rerun with ELVES_REGENERATE=1"
        );
    }
}
