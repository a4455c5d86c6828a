//! The connection session driven by arbitrary bytes, cuts and clock steps, against a model that
//! answers what it asks for from a real hub and writes everything at once. It never panics; the
//! input it holds stays within a head's bound plus the last read, when the model stops reading
//! as it is told; a deadline, once handled, is never in the past; and without clock steps any
//! cut of the same input gives the same transcript (bytes written and actions, in order) —
//! except where an echo is answered, whose chunks follow the reads by design.
#![no_main]

use c10k_lab::app::config::ServerConfig;
use c10k_lab::app::hub::Hub;
use c10k_lab::app::session::{Action, Ctx, Session};
use c10k_lab::proto::http::MAX_HEAD_BYTES;
use libfuzzer_sys::fuzz_target;

/// What a step of the script does.
enum Step<'a> {
    In(&'a [u8]),
    Eof,
    /// Let this many milliseconds pass (and fire the deadline if it is due).
    Wait(u64),
    Tick,
    Heartbeat,
    Shutdown,
    Backlog(usize),
}

struct Model {
    cfg: ServerConfig,
    hub: Hub,
    now: u64,
    session: Session,
    transcript: Vec<u8>,
    /// Feed input only while the session wants it, as a model must.
    obey_pauses: bool,
}

impl Model {
    fn new() -> Model {
        let cfg = ServerConfig {
            header_timeout_ms: 100,
            idle_timeout_ms: 1_000,
            poll_timeout_ms: 500,
            max_write_queue: 64 * 1024,
            max_message: 4096,
            max_echo_body: 4096,
            ..ServerConfig::default()
        };
        Model {
            session: Session::new(&cfg, 0),
            cfg,
            hub: Hub::new(16, 1 << 20),
            now: 0,
            transcript: Vec::new(),
            obey_pauses: false,
        }
    }

    fn call(&mut self, f: impl FnOnce(&mut Session, &mut Ctx, &Hub)) {
        let mut actions = Vec::new();
        let mut cx = Ctx {
            cfg: &self.cfg,
            now: self.now,
            actions: &mut actions,
        };
        f(&mut self.session, &mut cx, &self.hub);
        for action in actions {
            self.perform(action);
        }
    }

    fn perform(&mut self, action: Action) {
        let note = |t: &mut Vec<u8>, s: String| t.extend_from_slice(format!("<{s}>").as_bytes());
        match action {
            Action::Write(piece) => self.transcript.extend_from_slice(piece.bytes()),
            Action::Subscribe { kind, after } => {
                note(
                    &mut self.transcript,
                    format!("subscribe {kind:?} {after:?}"),
                );
                let from = self.hub.resume_point(after);
                self.call(|s, cx, hub| s.subscribed(cx, from, hub.since(from)));
            }
            Action::Publish(text) => {
                note(&mut self.transcript, format!("publish {}", text.len()));
                let seq = self.hub.publish_message(&text, 1).seq;
                self.call(|s, cx, _| s.published(cx, seq, 1));
            }
            Action::Stats => self.call(|s, cx, _| s.stats(cx, b"{}")),
            other => note(&mut self.transcript, format!("{other:?}")),
        }
    }

    fn run(&mut self, step: Step) {
        match step {
            Step::In(bytes) => {
                if self.obey_pauses && !self.session.wants_input() {
                    return;
                }
                self.call(|s, cx, _| s.on_input(cx, bytes));
                if self.obey_pauses {
                    assert!(self.session.buffered() <= MAX_HEAD_BYTES + bytes.len());
                }
            }
            Step::Eof => self.call(|s, cx, _| s.on_eof(cx)),
            Step::Wait(ms) => {
                self.now += ms;
                let due = self.session.deadline();
                if due != 0 && self.now >= due {
                    self.call(|s, cx, _| s.on_deadline(cx));
                    let next = self.session.deadline();
                    assert!(next == 0 || next > self.now, "a deadline in the past");
                }
            }
            Step::Tick => {
                self.hub.publish_tick(1);
                let from = self.session.delivered();
                self.call(|s, cx, hub| s.on_events(cx, hub.since(from)));
            }
            Step::Heartbeat => self.call(|s, cx, _| s.on_heartbeat(cx)),
            Step::Shutdown => self.call(|s, cx, _| s.on_shutdown(cx)),
            Step::Backlog(n) => self.call(|s, cx, _| s.on_write_queue(cx, n)),
        }
        // A socket that takes everything at once.
        while self.session.is_writing() {
            self.call(|s, cx, _| s.on_drained(cx));
        }
    }
}

fn transcript(steps: Vec<Step>, obey_pauses: bool) -> Vec<u8> {
    let mut model = Model::new();
    model.obey_pauses = obey_pauses;
    for step in steps {
        model.run(step);
    }
    model.transcript
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (control, input) = data.split_at(4);
    // Cuts alone: the transcript is the same for every cut.
    let step = usize::from(control[0] % 31) + 1;
    let whole = transcript(vec![Step::In(input)], false);
    let cut = transcript(input.chunks(step).map(Step::In).collect(), false);
    if !input.windows(5).any(|w| w == b"/echo") {
        assert_eq!(whole, cut);
    }
    // Cuts, clock steps and the rest: only that nothing breaks.
    let mut steps = Vec::new();
    for (i, piece) in input.chunks(step).enumerate() {
        steps.push(Step::In(piece));
        let c = control[1 + i % 3];
        steps.push(match c % 8 {
            0 => Step::Wait(u64::from(c) * 8),
            1 => Step::Tick,
            2 => Step::Heartbeat,
            3 => Step::Backlog(usize::from(c) * 1024),
            4 if i > 3 => Step::Eof,
            5 if c > 250 => Step::Shutdown,
            _ => Step::Wait(1),
        });
    }
    steps.push(Step::Wait(5_000));
    transcript(steps, true);
});
