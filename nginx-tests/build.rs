//! `cfg(nginx_auth_request)` when the nginx under test (`build/sbin/nginx`, or
//! `$NGX_SUPERVISORD_NGINX`) was built with `auth_request`, so that a test needing it is
//! ignored, with its reason, and reported as skipped where it does not apply.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(nginx_auth_request)");
    println!("cargo::rerun-if-env-changed=NGX_SUPERVISORD_NGINX");
    let nginx = std::env::var_os("NGX_SUPERVISORD_NGINX")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../build/sbin/nginx")
        });
    println!("cargo::rerun-if-changed={}", nginx.display());
    let Ok(output) = Command::new(&nginx).arg("-V").output() else {
        return;
    };
    if String::from_utf8_lossy(&output.stderr).contains("http_auth_request_module") {
        println!("cargo::rustc-cfg=nginx_auth_request");
    }
}
