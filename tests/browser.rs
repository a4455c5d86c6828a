//! A real browser: headless Chromium, driven over the DevTools protocol, opens the dashboard of
//! a quick starvation run, sees the rows arrive and the charts drawn, reloads mid-run and gets
//! the history at once, sees the verdict, then opens `report.html` from disk; a page opens
//! more event streams than HTTP/1.1 lets a browser hold to one origin; and an event stream
//! opened as the page itself never finishes loading.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use headless_chrome::{Browser, LaunchOptions, Tab};

/// Chromium, or `None` after saying the test is skipped; `.ci/run` installs it and sets
/// `C10K_REQUIRE_BROWSER`, so it cannot skip there.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|name| Path::new("/usr/bin").join(name))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("C10K_REQUIRE_BROWSER").is_none(),
            "Chromium is required here: apt-get install chromium"
        );
        eprintln!("skipped: no Chromium (apt-get install chromium)");
    }
    found
}

fn launch(chromium: PathBuf) -> Browser {
    Browser::new(
        LaunchOptions::default_builder()
            .path(Some(chromium))
            .sandbox(false)
            .window_size(Some((1280, 800)))
            .idle_browser_timeout(Duration::from_secs(120))
            .build()
            .expect("launch options"),
    )
    .expect("start Chromium")
}

fn number(tab: &Tab, expression: &str) -> f64 {
    tab.evaluate(expression, false)
        .ok()
        .and_then(|o| o.value)
        .and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(-1.0)
}

fn text(tab: &Tab, expression: &str) -> String {
    tab.evaluate(expression, false)
        .ok()
        .and_then(|o| o.value)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Waits (at most `limit`) until `done` holds for the page.
fn wait_for(tab: &Tab, limit: Duration, what: &str, done: impl Fn(&Tab) -> bool) {
    let deadline = Instant::now() + limit;
    while !done(tab) {
        assert!(Instant::now() < deadline, "the page never showed {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_dashboard_draws_the_run_live_replays_it_on_reload_and_the_report_opens_from_disk() {
    let Some(chromium) = chromium() else {
        return;
    };
    let out = std::env::temp_dir().join(format!("c10k-browser-{}", std::process::id()));
    let mut run = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(["run", "starvation", "--quick", "--hold-s", "5"])
        .args(["--web", "127.0.0.1:0", "--web-linger-s", "30", "--out"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the run");
    let mut lines = BufReader::new(run.stdout.take().expect("stdout")).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("dashboard on ").map(str::to_string))
        .expect("the run prints where its dashboard is");
    // The rest of the output is not needed, but the pipe must not fill up.
    thread::spawn(move || lines.for_each(drop));

    let browser = launch(chromium);
    let tab: Arc<Tab> = browser.new_tab().expect("a tab");
    tab.navigate_to(&url).expect("open the dashboard");

    // Rows arrive one per second per model and the charts are drawn from them.
    let rows = |t: &Tab| number(t, "Number(document.body.dataset.rows)");
    wait_for(&tab, Duration::from_secs(20), "a first row", |t| {
        rows(t) >= 2.0
    });
    let first = rows(&tab);
    wait_for(&tab, Duration::from_secs(20), "more rows", |t| {
        rows(t) >= first + 2.0
    });
    assert_eq!(text(&tab, "document.body.dataset.state"), "live");
    let lines = number(&tab, "document.querySelectorAll('path.series').length");
    assert!(lines >= 6.0, "{lines} series lines drawn");

    // A reload mid-run gets the whole run so far at once, not one row a second.
    let before = rows(&tab);
    let first_x = text(&tab, "document.body.dataset.firstX");
    tab.reload(false, None).expect("reload");
    wait_for(
        &tab,
        Duration::from_secs(1),
        "the history after a reload",
        |t| rows(t) >= before,
    );
    assert_eq!(text(&tab, "document.body.dataset.firstX"), first_x);
    assert_eq!(number(&tab, "Number(document.body.dataset.repeats)"), 0.0);

    // The verdict ends the run on the page.
    wait_for(&tab, Duration::from_secs(60), "the verdict", |t| {
        text(t, "document.body.dataset.state") == "over"
    });
    let verdict = text(&tab, "document.getElementById('verdict').innerText");
    assert!(
        verdict.contains("evented: every probe answered"),
        "{verdict}"
    );
    assert!(verdict.contains("blocking, pool of 4"), "{verdict}");
    // Every row the run wrote reached the page once: the CSV has one line per row, plus a header.
    let csv = std::fs::read_to_string(out.join("starvation.csv")).expect("the CSV");
    assert_eq!(rows(&tab), (csv.lines().count() - 1) as f64);
    assert_eq!(number(&tab, "Number(document.body.dataset.repeats)"), 0.0);

    // The report opens from disk, with no server: charts, table and verdict are in the file.
    let report = out.join("report.html");
    tab.navigate_to(&format!("file://{}", report.display()))
        .expect("open the report")
        .wait_until_navigated()
        .expect("the report loads");
    assert!(number(&tab, "document.querySelectorAll('figure svg').length") >= 1.0);
    assert!(number(&tab, "document.querySelectorAll('table tr').length") > 4.0);
    let body = text(&tab, "document.body.innerText");
    assert!(
        body.contains("evented: every probe answered"),
        "{body:.300}"
    );

    let _ = run.kill();
    let _ = run.wait();
    let _ = std::fs::remove_dir_all(&out);
}

/// A browser with one tab on the probe page (`GET /`) of a fresh evented server, which ticks
/// every `tick_ms` (0: never). The browser must outlive the tab.
fn probe_page(chromium: PathBuf, tick_ms: u64) -> (common::Server, Browser, Arc<Tab>) {
    let tick_ms = tick_ms.to_string();
    let server = common::Server::start(&["--model", "evented", "--tick-ms", &tick_ms]);
    let browser = launch(chromium);
    let tab: Arc<Tab> = browser.new_tab().expect("a tab");
    tab.navigate_to(&format!("http://{}/", server.addr))
        .and_then(|t| t.wait_until_navigated())
        .expect("open the probe page");
    (server, browser, tab)
}

/// WHATWG HTML §9.2.7: over HTTP/1.1 every `EventSource` is a connection of its own, and a
/// browser holds only so many to one origin — six in Chromium. The seventh and eighth wait
/// until one of the six is closed.
#[test]
fn a_page_gets_six_event_streams_per_origin_over_http1() {
    let Some(chromium) = chromium() else {
        return;
    };
    let (server, _browser, tab) = probe_page(chromium, 0);
    tab.evaluate(
        "window.streams = Array.from({length: 8}, () => new EventSource('/sse')); 8",
        false,
    )
    .expect("open 8 event streams");
    let open = |t: &Tab| number(t, "window.streams.filter(s => s.readyState === 1).length");
    wait_for(&tab, Duration::from_secs(10), "six open streams", |t| {
        open(t) == 6.0
    });
    // Long enough for a seventh connection to have been made, were it allowed.
    thread::sleep(Duration::from_secs(1));
    assert_eq!(open(&tab), 6.0);
    assert_eq!(server.stats()["connections"]["sse"], 6);
    assert_eq!(
        text(&tab, "window.streams.map(s => s.readyState).join('')"),
        "11111100",
        "the first six open, the last two still connecting"
    );
    tab.evaluate(
        "window.streams[0].close(); window.streams[1].close(); 2",
        false,
    )
    .expect("close two streams");
    wait_for(
        &tab,
        Duration::from_secs(10),
        "the waiting two to open",
        |t| text(t, "window.streams.map(s => s.readyState).join('')") == "22111111",
    );
    server.wait_stats("six streams again", |s| s["connections"]["sse"] == 6);
}

/// The source conversation's worry: an event stream opened as the page itself, rather than by
/// script, never finishes loading (the response never ends), while the same server's plain page
/// does at once.
#[test]
fn a_page_that_is_an_event_stream_keeps_loading() {
    let Some(chromium) = chromium() else {
        return;
    };
    let (server, _browser, tab) = probe_page(chromium, 100);
    assert_eq!(text(&tab, "document.readyState"), "complete");
    tab.navigate_to(&format!("http://{}/sse", server.addr))
        .expect("open the event stream as a page");
    // Ticks arrive ten times a second; the document takes them in and is never done.
    wait_for(
        &tab,
        Duration::from_secs(10),
        "the stream's ticks in the page",
        |t| text(t, "document.body ? document.body.innerText : ''").contains("event: tick"),
    );
    thread::sleep(Duration::from_secs(1));
    assert_eq!(text(&tab, "document.readyState"), "loading");
}
