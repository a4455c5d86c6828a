//! A 1280×800 screenshot of a page in headless Chromium, taken after a wait: how the README's
//! picture of the dashboard in the middle of a run is made.
//!
//!     cargo run --release -- run starvation --web &
//!     cargo run --release --example screenshot -- http://127.0.0.1:8099/ notes/img/dashboard.png 12

use std::time::Duration;

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions};

fn main() {
    if let Err(e) = run() {
        eprintln!("screenshot: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, out, rest @ ..] = args.as_slice() else {
        return Err("usage: screenshot URL OUT.png [SECONDS]".to_string());
    };
    let wait: f64 = rest
        .first()
        .map_or(Ok(5.0), |s| s.parse())
        .map_err(|_| "SECONDS is a number".to_string())?;
    let browser = Browser::new(
        LaunchOptions::default_builder()
            .path(Some("/usr/bin/chromium".into()))
            .sandbox(false)
            .window_size(Some((1280, 800)))
            .build()
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("cannot start Chromium: {e}"))?;
    let tab = browser.new_tab().map_err(|e| e.to_string())?;
    tab.navigate_to(url).map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_secs_f64(wait));
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .map_err(|e| e.to_string())?;
    std::fs::write(out, png).map_err(|e| format!("cannot write {out}: {e}"))
}
