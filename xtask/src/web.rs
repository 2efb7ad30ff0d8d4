//! The browser side: the web bundle, Chromium, and wasm tests in headless Chromium.

use crate::{cargo, root, step, target_dir, WASM_TARGET};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Where `build-web` puts the bundle the signaling server serves.
pub fn bundle_dir() -> PathBuf {
    root().join("target/web")
}

/// Makes sure Chromium and chromedriver are installed: installs them from Debian when missing and we are
/// root, else says what to install.
pub fn ensure_chromium() -> Result<(), String> {
    ensure_debian(&[(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")])
}

/// Whether this process runs as root (apt-get, network namespaces).
pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false)
}

/// Installs the Debian packages whose files (`path`, `package`) are missing, with apt-get when root; else
/// stops with the command that would.
pub fn ensure_debian(needs: &[(&str, &str)]) -> Result<(), String> {
    let missing: Vec<&str> = needs.iter().filter(|(path, _)| !Path::new(path).exists()).map(|(_, p)| *p).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let hint = format!("install them with: apt-get install -y {}", missing.join(" "));
    let paths: Vec<&str> = needs.iter().map(|(path, _)| *path).collect();
    if !is_root() {
        return Err(format!("{} are needed; {hint}", paths.join(", ")));
    }
    step("apt-get update", Command::new("apt-get").args(["update", "-qq"])).map_err(|e| format!("{e}; {hint}"))?;
    step(
        &format!("apt-get install {}", missing.join(" ")),
        Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .map_err(|e| format!("{e}; {hint}"))
}

/// `cargo xtask wasm-test-runner <file.wasm> [args]`: what cargo runs for wasm32 tests (the runner of the
/// pinned `wasm-bindgen-cli`, as a library).
pub fn wasm_test_runner(args: &[String]) -> Result<(), String> {
    let argv = std::iter::once("wasm-bindgen-test-runner".to_string()).chain(args.iter().cloned());
    wasm_bindgen_cli::wasm_bindgen_test_runner::run_cli_with_args(argv).map_err(|e| format!("{e:#}"))
}

/// Runs the wasm32 tests of `packages` in headless Chromium.
pub fn browser_tests(packages: &[&str]) -> Result<(), String> {
    ensure_chromium()?;
    let me = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let mut cmd = cargo();
    cmd.args(["test", "--locked", "--target", WASM_TARGET]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    cmd.env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER", format!("{} wasm-test-runner", me.display()))
        .env("CHROMEDRIVER", CHROMEDRIVER)
        .env("WASM_BINDGEN_TEST_TIMEOUT", "120");
    step("wasm tests in headless Chromium", &mut cmd)
}

/// `cargo xtask build-web`: web-node for wasm32 (the workspace's `web-release` profile: release without debug
/// info, as one optimised whole; the names section left out), its JS glue from the pinned
/// `wasm-bindgen-cli-support`, and the page, into `target/web`.
pub fn build_web() -> Result<PathBuf, String> {
    crate::ensure_wasm_target()?;
    step(
        "web-node for wasm32 (profile web-release)",
        cargo().args(["build", "--profile", "web-release", "--locked", "-p", "web-node", "--target", WASM_TARGET]),
    )?;
    let wasm = target_dir().join(WASM_TARGET).join("web-release/web_node.wasm");
    let out = bundle_dir();
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("==> wasm-bindgen {} → {}", wasm.display(), out.display());
    let mut bindgen = wasm_bindgen_cli_support::Bindgen::new();
    bindgen
        .input_path(&wasm)
        .web(true)
        .map_err(|e| format!("wasm-bindgen: {e:#}"))?
        // The library's default differs from the CLI's: without it `init()` fails in the browser.
        .omit_default_module_path(false)
        // Function names for stack traces: about 490 KB of the 1.8 MB a page loads (panics keep their
        // messages).
        .remove_name_section(true)
        .typescript(false);
    bindgen.generate(&out).map_err(|e| format!("wasm-bindgen: {e:#}"))?;
    let www = root().join("web-node/www");
    for entry in std::fs::read_dir(&www).map_err(|e| format!("{}: {e}", www.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        std::fs::copy(entry.path(), out.join(entry.file_name()))
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
    }
    pin_bundle(&out)?;
    let size = std::fs::metadata(out.join("web_node_bg.wasm")).map(|m| m.len()).unwrap_or(0);
    eprintln!("==> web bundle in {} (wasm {} KiB)", out.display(), size / 1024);
    Ok(out)
}

/// The Subresource Integrity form of `bytes`' SHA-384: `sha384-<base64>`.
pub fn sri(bytes: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    format!("sha384-{}", base64::engine::general_purpose::STANDARD.encode(sha2::Sha384::digest(bytes)))
}

/// Pins the bundle by hash, so that a page whose index.html comes from the server runs nothing else: the
/// wasm's hash goes into app.js (which checks the bytes before compiling them), and the hashes of app.js,
/// the wasm-bindgen glue and the style sheet into index.html (`integrity` on the script, the style sheet
/// and the glue's preload, and an import map's `integrity` for the glue app.js imports).
fn pin_bundle(out: &Path) -> Result<(), String> {
    let read = |name: &str| std::fs::read(out.join(name)).map_err(|e| format!("{}: {e}", out.join(name).display()));
    let write = |name: &str, text: &str| {
        std::fs::write(out.join(name), text).map_err(|e| format!("{}: {e}", out.join(name).display()))
    };
    let replace = |text: &str, from: &str, to: &str, name: &str| {
        if text.matches(from).count() != 1 {
            return Err(format!("pinning the bundle: {name} must hold `{from}` exactly once"));
        }
        Ok(text.replace(from, to))
    };
    let wasm = read("web_node_bg.wasm")?;
    let app = String::from_utf8(read("app.js")?).map_err(|e| format!("app.js: {e}"))?;
    let app = replace(&app, "@WASM_SHA384@", &sri(&wasm), "app.js")?;
    write("app.js", &app)?;
    let page = String::from_utf8(read("index.html")?).map_err(|e| format!("index.html: {e}"))?;
    let style = format!(r#"<link rel="stylesheet" href="style.css" integrity="{}">"#, sri(&read("style.css")?));
    let page = replace(&page, r#"<link rel="stylesheet" href="style.css">"#, &style, "index.html")?;
    let glue_sri = sri(&read("web_node.js")?);
    let scripts = format!(
        "<script type=\"importmap\">{{\"integrity\":{{\"./web_node.js\":\"{glue_sri}\"}}}}</script>\n  \
         <script type=\"module\" src=\"app.js\" integrity=\"{}\"></script>",
        sri(app.as_bytes())
    );
    let page = replace(&page, r#"<script type="module" src="app.js"></script>"#, &scripts, "index.html")?;
    // A module preloaded without its hash would be taken as it came when app.js imports it.
    let glue = format!(r#"<link rel="modulepreload" href="web_node.js" integrity="{glue_sri}">"#);
    let page = replace(&page, r#"<link rel="modulepreload" href="web_node.js">"#, &glue, "index.html")?;
    write("index.html", &page)
}
