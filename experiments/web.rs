//! `--web`: an experiment's live view in the browser, beside the one in the terminal. The
//! experiment describes its charts once (`Meta`), then sends each row as it prints it.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::dashboard::Dashboard;

/// The dashboard options every experiment with a live view takes.
#[derive(Debug, Clone, clap::Args)]
pub struct WebArgs {
    /// Also show the run live in a browser, served at ADDR [default: 127.0.0.1:8099; port 0
    /// picks one].
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8099")]
    pub web: Option<SocketAddr>,
    /// Seconds the dashboard keeps serving once the run is over, so that the verdict shows.
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub web_linger_s: u64,
}

/// What the page draws: each chart with one line per series, and a table of the latest row
/// of each series.
#[derive(Debug, Serialize)]
pub struct Meta {
    pub title: String,
    pub x: Axis,
    /// Whether each row is a point worth marking (a step), not one of many seconds.
    pub points: bool,
    /// The series in the order their colours are given.
    pub series: Vec<String>,
    pub charts: Vec<Chart>,
    pub columns: Vec<Column>,
}

#[derive(Debug, Serialize)]
pub struct Axis {
    pub label: &'static str,
    pub log: bool,
}

/// One chart: `key` of every row against x.
#[derive(Debug, Serialize)]
pub struct Chart {
    pub key: &'static str,
    pub title: &'static str,
    pub unit: &'static str,
    pub log: bool,
    /// A row whose `mark` value is true or non-zero gets a cross at `mark_at`.
    pub mark: Option<&'static str>,
    pub mark_label: &'static str,
    pub mark_at: Option<f64>,
}

impl Chart {
    pub fn new(key: &'static str, title: &'static str, unit: &'static str, log: bool) -> Chart {
        Chart {
            key,
            title,
            unit,
            log,
            mark: None,
            mark_label: "",
            mark_at: None,
        }
    }

    /// Crosses at `at` on the rows where `key` is set, labelled `label` in the legend.
    pub fn marked(mut self, key: &'static str, label: &'static str, at: f64) -> Chart {
        self.mark = Some(key);
        self.mark_label = label;
        self.mark_at = Some(at);
        self
    }
}

/// A column of the table of latest rows.
#[derive(Debug, Serialize)]
pub struct Column {
    pub key: &'static str,
    pub label: &'static str,
    /// `ms`, `MiB`, `B` or a word written after the number.
    pub unit: &'static str,
}

pub fn column(key: &'static str, label: &'static str, unit: &'static str) -> Column {
    Column { key, label, unit }
}

/// The dashboard of one run, or nothing when `--web` was not given.
pub struct Web {
    dashboard: Option<Dashboard>,
    linger: Duration,
    /// The run's title, which the report takes too.
    pub title: String,
}

impl Web {
    /// Starts the dashboard if asked, and says where it is.
    pub fn start(args: &WebArgs, meta: &Meta) -> Result<Web, String> {
        let linger = Duration::from_secs(args.web_linger_s);
        let Some(addr) = args.web else {
            return Ok(Web {
                dashboard: None,
                linger,
                title: meta.title.clone(),
            });
        };
        let dashboard = Dashboard::start(addr)
            .map_err(|e| format!("cannot serve the dashboard on {addr}: {e}"))?;
        println!("dashboard on http://{}/", dashboard.addr());
        let web = Web {
            dashboard: Some(dashboard),
            linger,
            title: meta.title.clone(),
        };
        web.send("meta", &super::harness::described(meta));
        Ok(web)
    }

    fn send<T: Serialize>(&self, event: &'static str, value: &T) {
        if let (Some(d), Ok(data)) = (&self.dashboard, serde_json::to_string(value)) {
            d.publish(event, data);
        }
    }

    /// A row of `series` at `x`; `values` is a JSON object of the panels' and columns' keys.
    pub fn row(&self, series: &str, x: f64, values: Value) {
        if self.dashboard.is_some() {
            self.send(
                "row",
                &serde_json::json!({ "series": series, "x": x, "values": values }),
            );
        }
    }

    /// A line of progress, shown until the next one.
    pub fn status(&self, text: &str) {
        if self.dashboard.is_some() {
            self.send("status", &serde_json::json!({ "text": text }));
        }
    }

    /// The verdict; the page shows it, stops listening and says the run is over. The dashboard
    /// keeps serving for `--web-linger-s`, so a page that was reconnecting gets it too.
    pub fn finish(self, lines: &[String], results: &str) {
        self.send(
            "verdict",
            &serde_json::json!({ "lines": lines, "results": results }),
        );
        if let Some(dashboard) = self.dashboard {
            println!(
                "dashboard: the verdict stays on http://{}/ for {} s",
                dashboard.addr(),
                self.linger.as_secs()
            );
            dashboard.finish(self.linger);
        }
    }
}
