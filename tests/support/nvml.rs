//! The fake NVML library (`tests/fake-nvml/`), built once per test binary by
//! `cargo build -p fake-nvml` into `$CARGO_TARGET_DIR/fake-nvml` (or `target/fake-nvml`), and the
//! `minimal` feature into `.../fake-nvml-minimal`. Set `FAKE_NVML_LIB` / `FAKE_NVML_LIB_MINIMAL`
//! to a prebuilt `.so` to skip the build.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Builds the fake library (once per variant) and returns the `.so` path.
pub fn fake_lib(minimal: bool) -> PathBuf {
    static FULL: OnceLock<PathBuf> = OnceLock::new();
    static MINIMAL: OnceLock<PathBuf> = OnceLock::new();
    let cell = if minimal { &MINIMAL } else { &FULL };
    cell.get_or_init(|| build_fake(minimal)).clone()
}

fn build_fake(minimal: bool) -> PathBuf {
    let var = if minimal {
        "FAKE_NVML_LIB_MINIMAL"
    } else {
        "FAKE_NVML_LIB"
    };
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"));
    let dir = base.join(if minimal {
        "fake-nvml-minimal"
    } else {
        "fake-nvml"
    });
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--quiet", "-p", "fake-nvml", "--target-dir"])
        .arg(&dir);
    if minimal {
        cmd.args(["--features", "minimal"]);
    }
    let status = cmd.status().expect("run cargo to build tests/fake-nvml");
    assert!(
        status.success(),
        "building tests/fake-nvml failed: {status}"
    );
    let so = dir.join("debug").join("libnvidia_ml.so");
    assert!(so.exists(), "{} missing after the build", so.display());
    so
}
