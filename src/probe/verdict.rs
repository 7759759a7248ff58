//! `probe`'s decisions, without sockets or clocks: what one check's bytes or echo replies
//! say (the HTTP and ping verdicts), when consecutive results flip a check's state (the
//! anti-flap rule), and whether an address is up given the states its vantage points see
//! (the vote). The event loop in `probe/mod.rs` only moves bytes and reads the clock; every
//! rule it applies is a pure function here, tested with tables of cases.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::gslb::HealthCheck;

/// Most of an HTTP response read: status line, headers and the first 4 KiB of body.
pub(super) const HTTP_READ_LIMIT: usize = 8192;

/// The start of the body that `body-contains` is looked for in.
const BODY_WINDOW: usize = 4096;

/// One check's result: passed, or failed with why (for the report and the log).
pub(super) type Outcome = Result<(), String>;

/// How far a check has got: more bytes are needed, or it is decided.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Not decided yet.
    Pending,
    /// Decided.
    Done(Outcome),
}

impl Step {
    /// A failed check.
    pub(super) fn fail(why: impl Into<String>) -> Self {
        Self::Done(Err(why.into()))
    }
}

//--- Anti-flap --------------------------------------------------------------------------

/// Consecutive results that flip a check's state: `up-after` successes bring it up,
/// `down-after` failures take it down.
#[derive(Debug, Clone, Copy)]
pub(super) struct Thresholds {
    /// Consecutive successes that bring a down check up.
    pub(super) up_after: u32,
    /// Consecutive failures that take an up check down.
    pub(super) down_after: u32,
}

impl Thresholds {
    /// A template's thresholds.
    pub(super) fn of(c: &HealthCheck) -> Self {
        Self {
            up_after: c.up_after,
            down_after: c.down_after,
        }
    }
}

/// The thresholded state of one check: its current runs of successes and failures and
/// the state they decided. Carried over reloads with the check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Flap {
    ok_run: u32,
    fail_run: u32,
    up: Option<bool>,
}

impl Flap {
    /// The state: `None` until the first result.
    pub(super) fn up(&self) -> Option<bool> {
        self.up
    }

    /// A check handed to this edge by another (probe sharding) starts in the state the
    /// fleet last gave it (up when none), with no runs: its first results flip it only
    /// after `down-after` (`up-after`) of them, as they would have on its last prober.
    pub(super) fn assume(up: bool) -> Self {
        Self {
            up: Some(up),
            ..Self::default()
        }
    }

    /// Counts one result. The first result decides the state alone (a target down at
    /// start-up is not served for `down-after` intervals); after that the state flips only
    /// after the thresholds' consecutive results. Returns whether the state changed.
    pub(super) fn record(&mut self, ok: bool, th: Thresholds) -> bool {
        if ok {
            self.ok_run += 1;
            self.fail_run = 0;
        } else {
            self.fail_run += 1;
            self.ok_run = 0;
        }
        let before = self.up;
        self.up = match self.up {
            None => Some(ok),
            Some(true) if self.fail_run >= th.down_after => Some(false),
            Some(false) if self.ok_run >= th.up_after => Some(true),
            same => same,
        };
        before != self.up
    }
}

//--- HTTP -------------------------------------------------------------------------------

/// What a template asks of an HTTP response.
#[derive(Debug, Clone, Copy)]
pub(super) struct HttpRule<'a> {
    /// Status codes that pass.
    pub(super) expect: &'a [u16],
    /// Text the start of the body must contain.
    pub(super) body_contains: Option<&'a str>,
}

impl<'a> HttpRule<'a> {
    /// A template's HTTP rule.
    pub(super) fn of(c: &'a HealthCheck) -> Self {
        Self {
            expect: &c.expect,
            body_contains: c.body_contains.as_deref(),
        }
    }
}

/// The head of an HTTP response, as far as it has been read.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// The blank line that ends the head has not come yet.
    Incomplete,
    /// The head ended but its first line is not `HTTP/x nnn ...`.
    NotHttp,
    /// The status code, and where the body starts.
    Status { code: u16, body: usize },
}

/// Reads the status line of a response; the header fields are not looked at.
fn head(buf: &[u8]) -> Head {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Head::Incomplete;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let status: Option<u16> = head
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok());
    match status {
        Some(code) => Head::Status {
            code,
            body: head_end + 4,
        },
        None => Head::NotHttp,
    }
}

/// Judges an HTTP response read so far: the status in `expect`, and `body-contains` found
/// in the first 4 KiB of the body. `complete`: nothing more will come (the peer closed,
/// or [`HTTP_READ_LIMIT`] was reached).
pub(super) fn http(buf: &[u8], rule: HttpRule<'_>, complete: bool) -> Step {
    let (code, body) = match head(buf) {
        Head::Incomplete if complete => return Step::fail("incomplete HTTP response"),
        Head::Incomplete => return Step::Pending,
        Head::NotHttp => return Step::fail("not an HTTP response"),
        Head::Status { code, body } => (code, body),
    };
    if !rule.expect.contains(&code) {
        return Step::fail(format!("HTTP status {code}"));
    }
    let Some(want) = rule.body_contains else {
        return Step::Done(Ok(()));
    };
    let body = &buf[body..buf.len().min(body + BODY_WINDOW)];
    // An empty `body-contains` matches no window of one octet: such a check never passes.
    if body
        .windows(want.len().max(1))
        .any(|w| w == want.as_bytes())
    {
        Step::Done(Ok(()))
    } else if complete || body.len() >= BODY_WINDOW {
        Step::fail(format!("body lacks {want:?}"))
    } else {
        Step::Pending
    }
}

/// Appends response bytes; returns the verdict once one is possible (enough read, or the
/// status and body already decide).
pub(super) fn absorb(resp: &mut Vec<u8>, bytes: &[u8], rule: HttpRule<'_>) -> Option<Step> {
    resp.extend_from_slice(bytes);
    if resp.len() >= HTTP_READ_LIMIT {
        return Some(http(resp, rule, true));
    }
    match http(resp, rule, false) {
        Step::Pending => None,
        done => Some(done),
    }
}

//--- Ping -------------------------------------------------------------------------------

/// What a template asks of a round of echo requests.
#[derive(Debug, Clone, Copy)]
pub(super) struct PingRule {
    /// Loss percentage at or above which the check fails.
    pub(super) max_loss: f64,
    /// Average round trip above which the check fails.
    pub(super) max_rtt: Duration,
}

impl PingRule {
    /// A template's ping rule.
    pub(super) fn of(c: &HealthCheck) -> Self {
        Self {
            max_loss: c.max_loss,
            max_rtt: c.max_rtt,
        }
    }
}

/// One round of echo requests: how many were sent, how many replies came back and their
/// summed round trips.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Echoes {
    /// Requests sent.
    pub(super) sent: u32,
    /// Replies received.
    pub(super) got: u32,
    /// Their round trips, summed.
    pub(super) total: Duration,
}

impl Echoes {
    /// A round of `sent` requests, no reply yet.
    pub(super) fn sent(sent: u32) -> Self {
        Self {
            sent,
            ..Self::default()
        }
    }

    /// Counts one reply; returns whether every request has had its reply.
    pub(super) fn reply(&mut self, rtt: Duration) -> bool {
        self.got += 1;
        self.total += rtt;
        self.got == self.sent
    }

    /// The verdict on what came back, and the average round trip (for the report): the
    /// loss below `max-loss` percent and the average round trip within `max-rtt`.
    pub(super) fn verdict(&self, rule: PingRule) -> (Outcome, Duration) {
        let Self { sent, got, total } = *self;
        let loss = if sent == 0 {
            100.0
        } else {
            f64::from(sent - got) * 100.0 / f64::from(sent)
        };
        let avg = if got == 0 {
            Duration::ZERO
        } else {
            total / got
        };
        let outcome = if loss >= rule.max_loss {
            Err(format!("{got} of {sent} echo replies ({loss:.0}% loss)"))
        } else if avg > rule.max_rtt {
            Err(format!(
                "average round trip {avg:?} above {:?}",
                rule.max_rtt
            ))
        } else {
            Ok(())
        };
        (outcome, avg)
    }
}

//--- Vantage vote -----------------------------------------------------------------------

/// One check's state as one vantage point sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Vote<'a> {
    /// The template.
    pub(super) check: &'a str,
    /// The check's thresholded state from this vantage point.
    pub(super) up: bool,
    /// The template's `failure-rate` percentage.
    pub(super) failure_rate: u32,
}

/// The address verdict: up when every template passes, a template passing when fewer than
/// `failure-rate` percent of its vantage points see the address down. No votes: up.
pub(super) fn address_up<'a>(votes: impl IntoIterator<Item = Vote<'a>>) -> bool {
    by_template(votes)
        .values()
        .all(|&(total, down, rate)| passes(total, down, rate))
}

/// By template: vantage points, those that see the address down, the template's rate.
fn by_template<'a>(votes: impl IntoIterator<Item = Vote<'a>>) -> HashMap<&'a str, (u32, u32, u32)> {
    let mut by_check: HashMap<&str, (u32, u32, u32)> = HashMap::new();
    for v in votes {
        let e = by_check.entry(v.check).or_default();
        e.0 += 1;
        e.1 += u32::from(!v.up);
        e.2 = v.failure_rate;
    }
    by_check
}

/// The failure-rate rule: a template passes while fewer than `rate` percent of its
/// `total` votes are `down`.
fn passes(total: u32, down: u32, rate: u32) -> bool {
    down * 100 < rate * total
}

/// One template's verdict from this node's vantage points alone (what a fleet edge
/// publishes): `None` without a vote on it yet.
pub(super) fn template_up<'a>(
    votes: impl IntoIterator<Item = Vote<'a>>,
    check: &str,
) -> Option<bool> {
    by_template(votes.into_iter().filter(|v| v.check == check))
        .get(check)
        .map(|&(total, down, rate)| passes(total, down, rate))
}

/// One template's verdict on a fleet edge sharing health; `None`: it holds (too few
/// fresh votes to decide). `own` is this edge's verdict over its vantage points (none
/// when it does not probe the template, has no result yet or is isolated), `others` each
/// other edge's vote (`Some(up)` fresh, `None` stale), `need` the fresh votes required
/// (`min-vantages`, at most the number of vantages that probe it: 1 for an edge on its
/// own).
///
/// - No fresh vote of another edge: this edge's own verdict decides, as on a single node
///   (none: it holds).
/// - Fewer than `need` fresh votes (this edge's included): it holds.
/// - Else every vote counts, a stale one as up, and the template fails when the share of
///   down votes reaches `rate` percent.
pub(super) fn fleet_template(
    own: Option<bool>,
    others: &[Option<bool>],
    rate: u32,
    need: usize,
) -> Option<bool> {
    let fresh = others.iter().filter(|v| v.is_some()).count();
    if fresh == 0 {
        return own;
    }
    if fresh + usize::from(own.is_some()) < need {
        return None;
    }
    let down =
        others.iter().filter(|v| **v == Some(false)).count() as u32 + u32::from(own == Some(false));
    let total = others.len() as u32 + u32::from(own.is_some());
    Some(passes(total, down, rate))
}

#[cfg(test)]
mod tests {
    //! Every rule as a table: one row per case (a name, the inputs, the expected verdict),
    //! one loop per table that reports every failing row at once. The tables keep one row
    //! per line (`rustfmt::skip`) so they read as tables.

    use super::*;

    /// Runs `check` on every row; fails once, listing every row that failed and why.
    fn table<R>(rows: &[R], name: fn(&R) -> &str, check: impl Fn(&R) -> Result<(), String>) {
        let failed: Vec<String> = rows
            .iter()
            .filter_map(|r| check(r).err().map(|e| format!("  {}: {e}", name(r))))
            .collect();
        assert!(
            failed.is_empty(),
            "{} of {} rows failed:\n{}",
            failed.len(),
            rows.len(),
            failed.join("\n")
        );
    }

    /// An expected verdict, short enough for one row.
    #[derive(Debug, Clone, Copy)]
    enum V {
        Pass,
        Fail(&'static str),
        /// Pending: more bytes are needed.
        Wait,
    }
    use V::{Fail, Pass, Wait};

    impl V {
        fn step(self) -> Step {
            match self {
                Pass => Step::Done(Ok(())),
                Fail(why) => Step::fail(why),
                Wait => Step::Pending,
            }
        }
    }

    fn same<T: PartialEq + std::fmt::Debug>(got: T, want: T) -> Result<(), String> {
        if got == want {
            Ok(())
        } else {
            Err(format!("got {got:?}, want {want:?}"))
        }
    }

    //--- Anti-flap

    /// (name, (up-after, down-after), results in order ('+' passed, '-' failed), the state
    /// after each ('U' up, 'D' down)).
    type FlapRow = (&'static str, (u32, u32), &'static str, &'static str);

    #[rustfmt::skip]
    const FLAP: &[FlapRow] = &[
        ("first success decides up",                        (2, 3), "+",         "U"),
        ("first failure decides down",                      (2, 3), "-",         "D"),
        ("down-after 3: two failures keep it up",           (2, 3), "+--",       "UUU"),
        ("down-after 3: the third failure takes it down",   (2, 3), "+---",      "UUUD"),
        ("a success resets the failure run",                (2, 3), "+--+--",    "UUUUUU"),
        ("up-after 2: one success keeps it down",           (2, 3), "-+",        "DD"),
        ("up-after 2: the second success brings it up",     (2, 3), "-++",       "DDU"),
        ("a failure resets the success run",                (2, 3), "-+-+",      "DDDD"),
        ("down stays down through more failures",           (2, 3), "----+",     "DDDDD"),
        ("thresholds of 1 follow every result",             (1, 1), "+-+-",      "UDUD"),
        ("down-after 1, up-after 3",                        (3, 1), "+-++-+++",  "UDDDDDDU"),
        ("alternating results never flip at 2/2",           (2, 2), "+-+-+-",    "UUUUUU"),
        ("the examples' 2/2: flips after pairs",            (2, 2), "+--++--",   "UUDDUUD"),
        ("long runs past the thresholds stay",              (2, 2), "-++++----", "DDUUUUDDD"),
        ("up-after 5: four successes are not enough",       (5, 1), "-++++",     "DDDDD"),
        ("up-after 5: the fifth brings it up",              (5, 1), "-+++++",    "DDDDDU"),
    ];

    /// Replays a row's results through [`Flap::record`]: the states and the reported
    /// changes (the first result is one, then every flip).
    fn flap_case(&(_, (up_after, down_after), results, want): &FlapRow) -> Result<(), String> {
        let th = Thresholds {
            up_after,
            down_after,
        };
        let mut f = Flap::default();
        let (mut states, mut changes) = (String::new(), 0);
        for ok in results.chars().map(|c| c == '+') {
            let before = f.up();
            let changed = f.record(ok, th);
            if changed != (f.up() != before) {
                return Err(format!("change reported as {changed} after {states:?}"));
            }
            changes += usize::from(changed);
            states.push(if f.up() == Some(true) { 'U' } else { 'D' });
        }
        let flips = want.as_bytes().windows(2).filter(|w| w[0] != w[1]).count();
        same((states.as_str(), changes), (want, 1 + flips))
    }

    #[test]
    fn anti_flap_table() {
        table(FLAP, |r| r.0, flap_case);
    }

    #[test]
    fn no_result_no_state() {
        assert_eq!(Flap::default().up(), None);
    }

    //--- HTTP

    /// (name, response read so far, expect, body-contains, complete, verdict).
    type HttpRow = (
        &'static str,
        &'static str,
        &'static [u16],
        Option<&'static str>,
        bool,
        V,
    );

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    #[rustfmt::skip]
    const HTTP: &[HttpRow] = &[
        ("200 expected",                      OK,                                        &[200],           None,       false, Pass),
        ("200 decides before the body",       "HTTP/1.1 200 OK\r\n\r\n",                 &[200],           None,       false, Pass),
        ("503 not expected",                  "HTTP/1.1 503 Unavailable\r\n\r\n",        &[200],           None,       false, Fail("HTTP status 503")),
        ("one of several expected",           "HTTP/1.0 204 No Content\r\n\r\n",         &[200, 204, 301], None,       true,  Pass),
        ("301 expected alone",                "HTTP/1.1 301 Moved\r\nLocation: /\r\n\r\n", &[301],         None,       true,  Pass),
        ("200 when only 301 is expected",     OK,                                        &[301],           None,       true,  Fail("HTTP status 200")),
        ("head not ended: wait",              "HTTP/1.1 200 OK\r\nContent-",             &[200],           None,       false, Wait),
        ("head not ended, peer closed",       "HTTP/1.1 200 OK\r\nContent-",             &[200],           None,       true,  Fail("incomplete HTTP response")),
        ("nothing read, peer closed",         "",                                        &[200],           None,       true,  Fail("incomplete HTTP response")),
        ("not HTTP",                          "SSH-2.0-OpenSSH\r\n\r\n",                 &[200],           None,       false, Fail("not an HTTP response")),
        ("status not a number",               "HTTP/1.1 OK\r\n\r\n",                     &[200],           None,       false, Fail("not an HTTP response")),
        ("no status",                         "HTTP/1.1\r\n\r\n",                        &[200],           None,       false, Fail("not an HTTP response")),
        ("status beyond 16 bits",             "HTTP/1.1 70000 Odd\r\n\r\n",              &[200],           None,       false, Fail("not an HTTP response")),
        ("header fields are not read",        "HTTP/1.1 200 OK\r\nX: HTTP/1.1 500\r\n\r\n", &[200],        None,       false, Pass),
        ("body contains the text",            "HTTP/1.1 200 OK\r\n\r\nstatus: up\n",     &[200],           Some("up"), false, Pass),
        ("body lacks it so far: wait",        "HTTP/1.1 200 OK\r\n\r\nstatus: do",       &[200],           Some("up"), false, Wait),
        ("body lacks it, peer closed",        "HTTP/1.1 200 OK\r\n\r\nstatus: down\n",   &[200],           Some("up"), true,  Fail("body lacks \"up\"")),
        ("a wrong status wins over the body", "HTTP/1.1 500 Oops\r\n\r\nup",             &[200],           Some("up"), false, Fail("HTTP status 500")),
        ("the text in the head does not count", "HTTP/1.1 200 up\r\n\r\n",               &[200],           Some("up"), true,  Fail("body lacks \"up\"")),
        // Today's rule, kept: an empty `body-contains` (the config accepts it) never passes.
        ("empty body-contains never passes",  "HTTP/1.1 200 OK\r\n\r\nbody",             &[200],           Some(""),   true,  Fail("body lacks \"\"")),
    ];

    #[test]
    fn http_table() {
        table(
            HTTP,
            |r| r.0,
            |&(_, bytes, expect, body_contains, complete, want)| {
                let rule = HttpRule {
                    expect,
                    body_contains,
                };
                same(http(bytes.as_bytes(), rule, complete), want.step())
            },
        );
    }

    /// The 4 KiB body window: (name, body length before the text, the text, verdict); the
    /// body is that many `x` then the text, `body-contains` is "up", more may come.
    #[rustfmt::skip]
    const WINDOW: &[(&str, usize, &str, V)] = &[
        ("text ending at 4 KiB",          BODY_WINDOW - 2, "up", Pass),
        ("text straddling 4 KiB",         BODY_WINDOW - 1, "up", Fail("body lacks \"up\"")),
        ("text past 4 KiB",               BODY_WINDOW,     "up", Fail("body lacks \"up\"")),
        ("4 KiB without it decides",      BODY_WINDOW,     "",   Fail("body lacks \"up\"")),
        ("short of 4 KiB without it waits", BODY_WINDOW - 1, "", Wait),
    ];

    #[test]
    fn body_window_table() {
        table(
            WINDOW,
            |r| r.0,
            |&(_, pad, text, want)| {
                let bytes = format!("HTTP/1.1 200 OK\r\n\r\n{}{text}", "x".repeat(pad));
                let rule = HttpRule {
                    expect: &[200],
                    body_contains: Some("up"),
                };
                same(http(bytes.as_bytes(), rule, false), want.step())
            },
        );
    }

    /// [`absorb`]: (name, body-contains, chunks in the order they arrive, the verdict after
    /// each; `Wait` means absorb returns none). `BIG` stands for a chunk that reaches the
    /// read limit.
    type AbsorbRow = (
        &'static str,
        Option<&'static str>,
        &'static [(&'static str, V)],
    );
    const BIG: &str = "BIG";

    #[rustfmt::skip]
    const ABSORB: &[AbsorbRow] = &[
        ("status in the second chunk",      None,       &[("HTTP/1.1 2", Wait), ("00 OK\r\n\r\n", Pass)]),
        ("head split at the blank line",    None,       &[("HTTP/1.1 200 OK\r\n", Wait), ("\r\n", Pass)]),
        ("body text in a later chunk",      Some("up"), &[("HTTP/1.1 200 OK\r\n\r\nsta", Wait), ("tus: u", Wait), ("p", Pass)]),
        ("no blank line within the limit",  None,       &[("HTTP/1.1 200 OK\r\nX: ", Wait), (BIG, Fail("incomplete HTTP response"))]),
    ];

    #[test]
    fn absorb_table() {
        let big = "x".repeat(HTTP_READ_LIMIT);
        table(
            ABSORB,
            |r| r.0,
            |&(_, body_contains, chunks)| {
                let rule = HttpRule {
                    expect: &[200],
                    body_contains,
                };
                let mut resp = Vec::new();
                for (k, &(chunk, want)) in chunks.iter().enumerate() {
                    let chunk = if chunk == BIG { big.as_str() } else { chunk };
                    let want = match want {
                        Wait => None,
                        v => Some(v.step()),
                    };
                    same(absorb(&mut resp, chunk.as_bytes(), rule), want)
                        .map_err(|e| format!("chunk {k}: {e}"))?;
                }
                Ok(())
            },
        );
    }

    //--- Ping

    const MS: Duration = Duration::from_millis(1);

    /// (name, (max-loss %, max-rtt ms), (sent, got, summed round trips ms), verdict,
    /// average round trip ms).
    type PingRow = (&'static str, (f64, u32), (u32, u32, u32), V, u32);

    #[rustfmt::skip]
    const PING: &[PingRow] = &[
        ("all back, fast",                        (100.0, 5000), (3, 3, 30),  Pass, 10),
        ("one lost of three, default max-loss",   (100.0, 5000), (3, 2, 20),  Pass, 10),
        ("all lost",                              (100.0, 5000), (3, 0, 0),   Fail("0 of 3 echo replies (100% loss)"), 0),
        ("nothing sent counts as all lost",       (100.0, 5000), (0, 0, 0),   Fail("0 of 0 echo replies (100% loss)"), 0),
        ("loss at max-loss fails",                (50.0, 5000),  (4, 2, 20),  Fail("2 of 4 echo replies (50% loss)"), 10),
        ("loss below max-loss passes",            (50.0, 5000),  (4, 3, 30),  Pass, 10),
        ("max-loss 0: every round fails",         (0.0, 5000),   (3, 3, 3),   Fail("3 of 3 echo replies (0% loss)"), 1),
        ("average above max-rtt",                 (100.0, 50),   (2, 2, 120), Fail("average round trip 60ms above 50ms"), 60),
        ("average at max-rtt passes",             (100.0, 50),   (2, 2, 100), Pass, 50),
        ("loss is judged before the round trip",  (50.0, 1),     (2, 1, 100), Fail("1 of 2 echo replies (50% loss)"), 100),
    ];

    #[test]
    fn ping_table() {
        table(
            PING,
            |r| r.0,
            |&(_, (max_loss, max_rtt), (sent, got, total), want, avg)| {
                let rule = PingRule {
                    max_loss,
                    max_rtt: MS * max_rtt,
                };
                let echoes = Echoes {
                    sent,
                    got,
                    total: MS * total,
                };
                let want = match want {
                    Pass => Ok(()),
                    Fail(why) => Err(why.to_string()),
                    Wait => unreachable!("a ping round always decides"),
                };
                same(echoes.verdict(rule), (want, MS * avg))
            },
        );
    }

    #[test]
    fn echoes_count_replies() {
        let mut e = Echoes::sent(2);
        assert!(!e.reply(MS * 3));
        assert!(e.reply(MS * 5));
        assert_eq!((e.got, e.total), (2, MS * 8));
    }

    //--- Vantage vote

    /// (name, one (template, up, failure-rate) per vantage point, the address is up).
    type VoteRow = (&'static str, &'static [(&'static str, bool, u32)], bool);

    #[rustfmt::skip]
    const VOTES: &[VoteRow] = &[
        ("no votes: up",                &[], true),
        ("one source up",               &[("http", true, 50)], true),
        ("one source down",             &[("http", false, 50)], false),
        ("one source down at 100%",     &[("http", false, 100)], false),
        ("1 of 2 down at 50%: down",    &[("http", true, 50), ("http", false, 50)], false),
        ("1 of 2 down at 51%: up",      &[("http", true, 51), ("http", false, 51)], true),
        ("1 of 3 down at 50%: up",      &[("http", true, 50), ("http", true, 50), ("http", false, 50)], true),
        ("2 of 3 down at 50%: down",    &[("http", false, 50), ("http", true, 50), ("http", false, 50)], false),
        ("1 of 4 down at 25%: down",    &[("h", false, 25), ("h", true, 25), ("h", true, 25), ("h", true, 25)], false),
        ("1 of 4 down at 26%: up",      &[("h", false, 26), ("h", true, 26), ("h", true, 26), ("h", true, 26)], true),
        ("3 of 3 down at 100%: down",   &[("h", false, 100), ("h", false, 100), ("h", false, 100)], false),
        ("2 of 3 down at 100%: up",     &[("h", false, 100), ("h", true, 100), ("h", false, 100)], true),
        ("every template must pass",    &[("http", true, 50), ("ping", false, 50)], false),
        ("two templates passing",       &[("http", true, 50), ("ping", true, 50), ("ping", true, 50)], true),
        ("templates are counted apart", &[("http", true, 50), ("http", true, 50), ("ping", true, 50), ("ping", false, 50)], false),
    ];

    #[test]
    fn vote_table() {
        table(
            VOTES,
            |r| r.0,
            |&(_, votes, want)| {
                let votes = votes.iter().map(|&(check, up, failure_rate)| Vote {
                    check,
                    up,
                    failure_rate,
                });
                same(address_up(votes), want)
            },
        );
    }

    /// (name, this edge's votes (template, up, failure-rate), the other edges' verdicts
    /// (template, up when fresh / None when stale), the address is up).
    /// (name, own verdict, others' votes, rate, fresh votes needed, verdict or hold).
    type FleetRow = (
        &'static str,
        Option<bool>,
        &'static [Option<bool>],
        u32,
        usize,
        Option<bool>,
    );
    const U: Option<bool> = Some(true);
    const D: Option<bool> = Some(false);
    const S: Option<bool> = None;

    #[rustfmt::skip]
    const FLEET: &[FleetRow] = &[
        ("alone, up",                          U, &[], 50, 1, U),
        ("alone, down: own verdict",           D, &[], 50, 1, D),
        ("alone, min-vantages 2: own verdict", D, &[], 50, 2, D),
        ("1 of 3 edges down (me) at 50%: up",  D, &[U, U], 50, 2, U),
        ("1 of 3 down (other) at 50%: up",     U, &[D, U], 50, 2, U),
        ("2 of 3 down (others) at 50%: down",  U, &[D, D], 50, 2, D),
        ("2 of 3 down (me too) at 50%: down",  D, &[D, U], 50, 2, D),
        ("1 of 2 down at 50%: down",           U, &[D], 50, 2, D),
        ("1 of 2 down at 51%: up",             U, &[D], 51, 2, U),
        ("2 of 3 down at 100%: up",            D, &[D, U], 100, 2, U),
        ("3 of 3 down at 100%: down",          D, &[D, D], 100, 2, D),
        ("not probed here: others decide",     S, &[D, D], 50, 2, D),
        ("not probed here, 1 fresh of 2: hold", S, &[D, S], 50, 2, S),
        ("not probed here, 1 fresh, need 1",   S, &[D], 50, 1, D),
        ("nothing at all: hold",               S, &[], 50, 2, S),
        ("a stale vote counts as up",          U, &[D, S], 50, 1, U),
        ("a stale down counts as up too",      U, &[D, S, D], 50, 1, D),
        ("1 down of 4, 2 stale: up",           U, &[S, S, D], 50, 1, U),
        ("1 fresh + own, need 3: hold",        U, &[D, S], 50, 3, S),
        ("none fresh: own verdict, down",      D, &[S, S], 50, 2, D),
        ("none fresh: own verdict, up",        U, &[S], 50, 2, U),
    ];

    #[test]
    fn fleet_table() {
        table(
            FLEET,
            |r| r.0,
            |&(_, own, others, rate, need, want)| {
                let got = fleet_template(own, others, rate, need);
                if got == want {
                    Ok(())
                } else {
                    Err(format!("got {got:?}, want {want:?}"))
                }
            },
        );
    }

    #[test]
    fn a_handed_over_check_waits_for_down_after() {
        let th = Thresholds {
            up_after: 2,
            down_after: 3,
        };
        let mut f = Flap::assume(true);
        assert!(!f.record(false, th) && !f.record(false, th));
        assert_eq!(f.up(), Some(true));
        assert!(f.record(false, th) && f.up() == Some(false));
        // A fresh state (a single node at boot) is decided by its first result.
        let mut g = Flap::default();
        assert!(g.record(false, th) && g.up() == Some(false));
        let mut h = Flap::assume(false);
        assert!(!h.record(true, th) && h.record(true, th) && h.up() == Some(true));
    }

    #[test]
    fn template_verdict_from_own_vantage_points() {
        let v = |check, up| Vote {
            check,
            up,
            failure_rate: 50,
        };
        let votes = [v("h", true), v("h", false), v("p", true)];
        assert_eq!(template_up(votes, "h"), Some(false));
        assert_eq!(template_up(votes, "p"), Some(true));
        assert_eq!(template_up(votes, "x"), None);
    }
}
