//! Full duplex: one TCP connection carries both directions at once. A `POST /echo` body sent in
//! pieces with pauses comes back while it is still being sent; a WebSocket receives broadcasts
//! while it sends; a client that has half-closed (sent its FIN) still receives its answer.
//! Settles "a response may only follow a complete request" and "only WebSocket is full duplex".

use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::chart::{self, Panel, Series};
use super::client::{self, since, Client};
use super::harness::{self, ServerProc};
use super::web::{column, Axis, Chart, Meta, Web, WebArgs};
use crate::app::config::Model;
use crate::proto::http::BodyDecoder;
use crate::proto::ws::{Message, OpCode};

/// `c10k run full-duplex`
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Server models, comma-separated.
    #[arg(long, value_enum, default_values_t = [Model::Evented, Model::Blocking], value_delimiter = ',')]
    pub models: Vec<Model>,
    /// Pieces the echo's request body is sent in.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(2..=1000))]
    pub pieces: u64,
    /// Bytes per piece.
    #[arg(long, default_value_t = 16 * 1024, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub piece_bytes: u64,
    /// Pause between two pieces, and between two WebSocket messages, in milliseconds.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub pause_ms: u64,
    /// WebSocket messages sent while broadcasts arrive.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub messages: u64,
    /// A short run for tests: 4 pieces and 4 messages, 60 ms apart.
    #[arg(long)]
    pub quick: bool,
    /// Where to write results [default: results/full-duplex].
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub web: WebArgs,
}

/// One point of a timeline: at `t_s` after the start, `value` bytes or messages so far.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub model: String,
    pub part: &'static str,
    pub series: &'static str,
    pub t_s: f64,
    pub value: u64,
}

/// What one model did in the three parts.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub model: String,
    pub echo: Echo,
    pub ws: Ws,
    pub half_close: HalfClose,
}

/// `POST /echo` with the body sent in pieces.
#[derive(Debug, Clone, Serialize)]
pub struct Echo {
    pub body_bytes: u64,
    /// When the last piece of the request body was sent.
    pub body_sent_s: f64,
    /// When the first echoed byte arrived; `None` if none did.
    pub first_echo_s: Option<f64>,
    /// Echoed bytes that arrived before the last piece was sent.
    pub echoed_before_body_end: u64,
    pub echoed_bytes: u64,
    pub echo_done_s: f64,
}

/// A WebSocket that sends while broadcasts arrive.
#[derive(Debug, Clone, Serialize)]
pub struct Ws {
    pub sent: u64,
    pub echoes: u64,
    /// Broadcasts received before the last echo came back.
    pub broadcasts_while_sending: u64,
}

/// A whole `POST /echo`, then the client's FIN, then the answer.
#[derive(Debug, Clone, Serialize)]
pub struct HalfClose {
    pub sent: u64,
    pub status: u16,
    pub echoed: u64,
}

impl Args {
    fn plan(&self) -> (u64, u64, u64, u64) {
        if self.quick {
            (4, self.piece_bytes.min(4096), 60, 4)
        } else {
            (self.pieces, self.piece_bytes, self.pause_ms, self.messages)
        }
    }
}

pub fn run(args: &Args) -> Result<(), String> {
    let dir = harness::results_dir("full-duplex", args.out.as_deref())?;
    let (pieces, piece_bytes, pause_ms, messages) = args.plan();
    harness::announce("full-duplex: both directions of one connection at once");
    let web = Web::start(&args.web, &dashboard(args))?;
    let mut points = Vec::new();
    let mut outcomes = Vec::new();
    for &model in &args.models {
        // Ticks 4 times per pause: broadcasts arrive while the WebSocket client sends.
        let tick = (pause_ms / 4).max(10).to_string();
        let mut server_args = vec!["--model", model.name(), "--tick-ms", &tick];
        if model == Model::Blocking {
            server_args.extend(["--threads", "8"]);
        }
        let server = ServerProc::start(model.name(), &server_args)?;
        println!("\n{} server on {}", model.name(), server.addr);
        let mut show = |p: Point| {
            web.row(
                &format!("{} {} {}", p.model, p.part, p.series),
                p.t_s,
                serde_json::json!({ p.part: p.value }),
            );
            points.push(p);
        };
        let echo = echo_in_pieces(server.addr, model, pieces, piece_bytes, pause_ms, &mut show)?;
        let ws = ws_both_ways(server.addr, model, messages, pause_ms, &mut show)?;
        let half_close = echo_after_half_close(server.addr, piece_bytes)?;
        println!(
            "  half-close: sent {} B and a FIN, then got {} and {} B echoed",
            half_close.sent, half_close.status, half_close.echoed
        );
        outcomes.push(Outcome {
            model: model.name().to_string(),
            echo,
            ws,
            half_close,
        });
    }
    let summary: Vec<String> = outcomes.iter().map(verdict).collect();
    write_results(&dir, &points, &outcomes)?;
    harness::print_verdict(&summary);
    harness::conclude(
        &dir,
        web,
        &summary,
        &["full-duplex.svg"],
        &["full-duplex-summary.csv", "full-duplex.csv"],
        &["full-duplex.json"],
    )
}

fn verdict(o: &Outcome) -> String {
    let e = &o.echo;
    let echo = match e.first_echo_s {
        Some(first) if first < e.body_sent_s => format!(
            "the echo's first byte came back {:.1} ms into the upload, {:.0} ms before its last piece was sent ({} of {} B echoed by then)",
            first * 1000.0,
            (e.body_sent_s - first) * 1000.0,
            e.echoed_before_body_end,
            e.body_bytes
        ),
        Some(first) => format!(
            "the echo began only after the whole body was sent ({:.0} ms in)",
            first * 1000.0
        ),
        None => "nothing was echoed".to_string(),
    };
    let h = &o.half_close;
    format!(
        "{}: {echo}; a WebSocket sent {} messages and got {} echoes and {} broadcasts meanwhile; after its FIN a client still got {} and {} of its {} B echoed",
        o.model, o.ws.sent, o.ws.echoes, o.ws.broadcasts_while_sending, h.status, h.echoed, h.sent
    )
}

/// Sends a `POST /echo` body in `pieces` with pauses on one thread while this one reads the
/// echo, each side noting when its bytes went or came.
fn echo_in_pieces(
    addr: SocketAddr,
    model: Model,
    pieces: u64,
    piece_bytes: u64,
    pause_ms: u64,
    show: &mut impl FnMut(Point),
) -> Result<Echo, String> {
    let total = pieces * piece_bytes;
    let (mut reader, mut writer) = pair(addr)?;
    let start = Instant::now();
    let (sent_tx, sent_rx) = mpsc::channel::<(f64, u64)>();
    let sender = thread::spawn(move || -> Result<(), String> {
        let head = format!(
            "POST /echo HTTP/1.1\r\nHost: c10k\r\nContent-Length: {total}\r\nContent-Type: application/octet-stream\r\n\r\n"
        );
        writer.send(head.as_bytes())?;
        let piece: Vec<u8> = (0..piece_bytes).map(|i| b'a' + (i % 26) as u8).collect();
        for i in 1..=pieces {
            // Timed before the write: an echo that arrives earlier cannot be of this piece.
            let t = since(start);
            writer.send(&piece)?;
            let _ = sent_tx.send((t, i * piece_bytes));
            if i < pieces {
                thread::sleep(Duration::from_millis(pause_ms));
            }
        }
        Ok(())
    });
    let point = |t_s, series, value| Point {
        model: model.name().to_string(),
        part: "echo",
        series,
        t_s,
        value,
    };
    let mut echo = Echo {
        body_bytes: total,
        body_sent_s: 0.0,
        first_echo_s: None,
        echoed_before_body_end: 0,
        echoed_bytes: 0,
        echo_done_s: 0.0,
    };
    let note_sent = |echo: &mut Echo, show: &mut dyn FnMut(Point)| {
        for (t, bytes) in sent_rx.try_iter() {
            println!("  {t:>7.3} s  sent   {bytes:>8} B of the body");
            show(point(t, "sent", bytes));
            echo.body_sent_s = t;
        }
    };
    let head = reader.read_head()?;
    let mut decoder = BodyDecoder::new(head.body, u64::MAX);
    let (mut body, mut echoes) = (Vec::new(), Vec::new());
    loop {
        let done = reader.decode_buffered(&mut decoder, &mut body)?;
        let now = since(start);
        note_sent(&mut echo, show);
        let echoed = body.len() as u64;
        if echoes.last().map_or(0, |&(_, before)| before) < echoed {
            echoes.push((now, echoed));
            println!("  {now:>7.3} s  echoed {echoed:>8} B");
            show(point(now, "echoed", echoed));
        }
        if done {
            echo.echo_done_s = now;
            break;
        }
        match reader.fill() {
            Ok(0) => return Err("the server closed before the echo ended".to_string()),
            Ok(_) => {}
            Err(e) => return Err(format!("the echo stopped arriving: {e}")),
        }
    }
    sender
        .join()
        .map_err(|_| "the sending thread panicked".to_string())??;
    // The last piece's note may come after the last echo was read.
    note_sent(&mut echo, show);
    echo.echoed_bytes = body.len() as u64;
    if echo.echoed_bytes != total {
        return Err(format!("{} B echoed of {total} B sent", echo.echoed_bytes));
    }
    echo.first_echo_s = echoes.first().map(|&(t, _)| t);
    echo.echoed_before_body_end = echoes
        .iter()
        .filter(|&&(t, _)| t < echo.body_sent_s)
        .map(|&(_, bytes)| bytes)
        .max()
        .unwrap_or(0);
    Ok(echo)
}

/// A connection and a second handle on it, so that one thread writes while another reads.
fn pair(addr: SocketAddr) -> Result<(Client, Client), String> {
    let reader = Client::connect(addr)?;
    let writer = reader
        .stream
        .try_clone()
        .map_err(|e| format!("cannot clone the client socket: {e}"))?;
    Ok((reader, Client::from_stream(writer)?))
}

/// Upgrades to a WebSocket and sends `messages` text messages `pause_ms` apart on one thread,
/// while this one reads: the echoes of those messages and the ticks the server broadcasts
/// meanwhile, on the same connection.
fn ws_both_ways(
    addr: SocketAddr,
    model: Model,
    messages: u64,
    pause_ms: u64,
    show: &mut impl FnMut(Point),
) -> Result<Ws, String> {
    let (mut reader, mut writer) = pair(addr)?;
    reader.upgrade("/ws")?;
    let start = Instant::now();
    let sender = thread::spawn(move || -> Result<(), String> {
        for i in 1..=messages {
            let text = format!("message {i}");
            writer.send(&client::client_frame(OpCode::Text, text.as_bytes()))?;
            if i < messages {
                thread::sleep(Duration::from_millis(pause_ms));
            }
        }
        Ok(())
    });
    let mut decoder = client::server_frames();
    let mut ws = Ws {
        sent: messages,
        echoes: 0,
        broadcasts_while_sending: 0,
    };
    let point = |series, value| Point {
        model: model.name().to_string(),
        part: "ws",
        series,
        t_s: since(start),
        value,
    };
    while ws.echoes < messages {
        match reader.read_message(&mut decoder)? {
            Message::Text(text) if text.starts_with("message ") => {
                ws.echoes += 1;
                show(point("sent and echoed", ws.echoes));
            }
            Message::Text(_) => {
                ws.broadcasts_while_sending += 1;
                show(point("broadcasts", ws.broadcasts_while_sending));
            }
            _ => {}
        }
    }
    sender
        .join()
        .map_err(|_| "the sending thread panicked".to_string())??;
    let _ = reader.send(&client::client_frame(OpCode::Close, &1000u16.to_be_bytes()));
    println!(
        "  WebSocket: {messages} messages sent {pause_ms} ms apart; {} echoes and {} broadcasts received meanwhile",
        ws.echoes, ws.broadcasts_while_sending
    );
    Ok(ws)
}

/// Sends a whole `POST /echo`, then shuts its sending side (a FIN: "I have no more to send",
/// RFC 9293 §3.6), then reads the answer on the direction that is still open.
fn echo_after_half_close(addr: SocketAddr, bytes: u64) -> Result<HalfClose, String> {
    let mut c = Client::connect(addr)?;
    c.send(
        format!("POST /echo HTTP/1.1\r\nHost: c10k\r\nContent-Length: {bytes}\r\n\r\n").as_bytes(),
    )?;
    c.send(&vec![b'x'; bytes as usize])?;
    c.stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("cannot half-close: {e}"))?;
    let head = c.read_head()?;
    let echoed = c.read_body(&head)?;
    Ok(HalfClose {
        sent: bytes,
        status: head.status,
        echoed: echoed.len() as u64,
    })
}

fn dashboard(args: &Args) -> Meta {
    let series = args
        .models
        .iter()
        .flat_map(|m| {
            [
                "echo sent",
                "echo echoed",
                "ws sent and echoed",
                "ws broadcasts",
            ]
            .map(|s| format!("{} {s}", m.name()))
        })
        .collect();
    Meta {
        title: "full-duplex: both directions of one connection at once".to_string(),
        x: Axis {
            label: "seconds since the connection's first byte",
            log: false,
        },
        points: true,
        series,
        charts: vec![
            Chart::new(
                "echo",
                "POST /echo: body sent and echo received",
                "B",
                false,
            ),
            Chart::new(
                "ws",
                "WebSocket: messages echoed, broadcasts received",
                "messages",
                false,
            ),
        ],
        columns: vec![column("echo", "echo", "B"), column("ws", "ws", "")],
    }
}

fn write_results(
    dir: &std::path::Path,
    points: &[Point],
    outcomes: &[Outcome],
) -> Result<(), String> {
    #[derive(Serialize)]
    struct Results<'a> {
        outcomes: &'a [Outcome],
        rows: &'a [Point],
    }
    harness::write_results(
        &dir.join("full-duplex.json"),
        &Results {
            outcomes,
            rows: points,
        },
    )?;
    let rows: Vec<Vec<String>> = points
        .iter()
        .map(|p| {
            vec![
                p.model.clone(),
                p.part.to_string(),
                p.series.to_string(),
                format!("{:.4}", p.t_s),
                p.value.to_string(),
            ]
        })
        .collect();
    harness::write_csv(
        &dir.join("full-duplex.csv"),
        &["model", "part", "series", "t_s", "value"],
        &rows,
    )?;
    let summary: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            vec![
                o.model.clone(),
                o.echo.body_bytes.to_string(),
                format!("{:.4}", o.echo.body_sent_s),
                o.echo
                    .first_echo_s
                    .map_or(String::new(), |t| format!("{t:.4}")),
                o.echo.echoed_before_body_end.to_string(),
                format!("{:.4}", o.echo.echo_done_s),
                o.ws.sent.to_string(),
                o.ws.echoes.to_string(),
                o.ws.broadcasts_while_sending.to_string(),
                o.half_close.sent.to_string(),
                o.half_close.status.to_string(),
                o.half_close.echoed.to_string(),
            ]
        })
        .collect();
    harness::write_csv(
        &dir.join("full-duplex-summary.csv"),
        &[
            "model",
            "body_bytes",
            "body_sent_s",
            "first_echo_s",
            "echoed_before_body_end",
            "echo_done_s",
            "ws_sent",
            "ws_echoes",
            "ws_broadcasts_while_sending",
            "half_close_sent",
            "half_close_status",
            "half_close_echoed",
        ],
        &summary,
    )?;
    // Counts jump when bytes arrive: drawn as steps, not as slopes between readings.
    let line = |model: &str, part: &str, series: &str, color, label: String| {
        let markers = series == "sent" || series == "broadcasts";
        let mut steps: Vec<(f64, f64)> = Vec::new();
        for p in points
            .iter()
            .filter(|p| p.model == model && p.part == part && p.series == series)
        {
            if let (false, Some(&(_, before))) = (markers, steps.last()) {
                steps.push((p.t_s, before));
            }
            steps.push((p.t_s, p.value as f64));
        }
        Series {
            label,
            color,
            points: steps,
            markers,
        }
    };
    let mut echo = Vec::new();
    let mut ws = Vec::new();
    for o in outcomes {
        let color = chart::model_color(&o.model);
        let m = o.model.as_str();
        echo.push(line(
            m,
            "echo",
            "sent",
            chart::lighter(color),
            format!("{m}: body sent (×)"),
        ));
        echo.push(line(
            m,
            "echo",
            "echoed",
            color,
            format!("{m}: echo received"),
        ));
        ws.push(line(
            m,
            "ws",
            "broadcasts",
            chart::lighter(color),
            format!("{m}: broadcasts received (×)"),
        ));
        ws.push(line(
            m,
            "ws",
            "sent and echoed",
            color,
            format!("{m}: own messages echoed"),
        ));
    }
    chart::draw(
        &dir.join("full-duplex.svg"),
        "one connection, both directions at once",
        "seconds since the connection's first byte",
        &[
            Panel {
                title: "POST /echo: the echo arrives while the body is still being sent"
                    .to_string(),
                y_label: "bytes so far".to_string(),
                log_y: false,
                y_min: 0.0,
                series: echo,
            },
            Panel {
                title: "WebSocket: broadcasts arrive while the client sends".to_string(),
                y_label: "messages so far".to_string(),
                log_y: false,
                y_min: 0.0,
                series: ws,
            },
        ],
    )
}
