//! Turns the nginx build's features into `ngx_feature = "..."` cfgs, so that code touching
//! optional struct fields (SSL session hooks of a peer connection, for one) compiles only when
//! the nginx we build against has them.

fn main() {
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES_CHECK");
    let known = std::env::var("DEP_NGINX_FEATURES_CHECK").unwrap_or_else(|_| "any()".into());
    println!("cargo::rustc-check-cfg=cfg(ngx_feature, values({known}))");
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES");
    if let Ok(features) = std::env::var("DEP_NGINX_FEATURES") {
        for feature in features.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            println!("cargo::rustc-cfg=ngx_feature=\"{feature}\"");
        }
    }
    // `server ... resolve` (its `host` field) exists from nginx 1.27.3 on.
    println!("cargo::rustc-check-cfg=cfg(nginx1_27_3)");
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    let version = std::env::var("DEP_NGINX_VERSION_NUMBER").ok();
    if version.and_then(|v| v.parse::<u64>().ok()) >= Some(1_027_003) {
        println!("cargo::rustc-cfg=nginx1_27_3");
    }
}
