//! How the world moves: feeding inputs to the machines, draining their outputs into the
//! network and the applications, and applying faults and actions.

use std::time::Duration;

use tether_core::client::{ClientInput, Event, Transmit};
use tether_core::server::{
    CommandError, ConnId, ConnectInfo, Outcome, PeerError, Server, ServerEvent, ServerInput,
    ServerTransmit,
};

use super::link::{Link, Payload};
use super::world::{Kind, Sim};

impl Sim {
    // ------------------------------------------------------------------------------ items

    pub(crate) fn handle_item(&mut self, kind: Kind) {
        match kind {
            Kind::Connect(link) => self.connect(link),
            Kind::DeliverUp(link, id) => self.deliver_up(link, id),
            Kind::DeliverDown(link, id) => self.deliver_down(link, id),
            Kind::ClientClose(link) => {
                let Some(l) = self.links.get_mut(&link) else {
                    return;
                };
                if l.client_open {
                    l.client_open = false;
                    let c = l.client;
                    self.client_input(
                        c,
                        link,
                        ClientInput::Closed(None, "connection reset".into()),
                    );
                }
                self.gc_link(link);
            }
            Kind::ServerClose(link) => {
                let Some(l) = self.links.get(&link) else {
                    return;
                };
                if l.server_open && self.instance_alive(l.instance, l.instance_gen) {
                    let i = l.instance;
                    self.server_input(i, ServerInput::Closed(ConnId(link)));
                }
                self.gc_link(link);
            }
            Kind::ClientTimer(c, gen) => {
                let now = self.instant();
                let sc = &mut self.clients[c];
                if sc.gen != gen
                    || sc.frozen_until.is_some()
                    || sc.armed.is_none_or(|a| a > self.now)
                {
                    return;
                }
                sc.armed = None;
                if self.stepwise {
                    sc.history.record(("timeout", now));
                }
                sc.machine.handle_timeout(now);
                self.stats.client_inputs += 1;
                self.drain_client(c);
                if self.clients[c].armed.is_some_and(|a| a < self.now) {
                    self.violate(
                        Some(c),
                        "handle_timeout left a deadline in the past (busy loop)".into(),
                    );
                }
            }
            Kind::Respond {
                instance,
                gen,
                session,
                request_id,
            } => {
                self.pending_responds = self.pending_responds.saturating_sub(1);
                if !self.instance_alive(instance, gen) {
                    return;
                }
                if let Some(until) = self.instances[instance].frozen_until {
                    self.pending_responds += 1;
                    self.push(
                        until,
                        Kind::Respond {
                            instance,
                            gen,
                            session,
                            request_id,
                        },
                    );
                    return;
                }
                let now = self.instant();
                let inst = &mut self.instances[instance];
                let Some(server) = inst.server.as_mut() else {
                    return;
                };
                if self.stepwise {
                    inst.history.record(("respond", now, &session, &request_id));
                }
                match server.respond(now, &session, &request_id, Outcome::ok("done")) {
                    Ok(_) => {
                        let key = (session.0.clone(), request_id.clone());
                        if let Some(r) = self.lineage.requests.get_mut(&key) {
                            r.1 = Some(self.now);
                        }
                    }
                    Err(CommandError::UnknownSession(_)) => {}
                    Err(e) => self.violate(None, format!("respond({request_id}) failed: {e}")),
                }
                self.drain_server(instance);
            }
            Kind::WakeClient(c, gen) => {
                let sc = &mut self.clients[c];
                if sc.gen != gen || sc.frozen_until.is_none_or(|u| u > self.now) {
                    return;
                }
                sc.frozen_until = None;
                let deferred = std::mem::take(&mut sc.deferred);
                for (link, input) in deferred {
                    self.client_input(c, link, input);
                }
                self.clients[c].armed = None;
                self.arm_client(c);
            }
            Kind::WakeServer(i, gen) => {
                let inst = &mut self.instances[i];
                if inst.gen != gen || inst.frozen_until.is_none_or(|u| u > self.now) {
                    return;
                }
                inst.frozen_until = None;
                let deferred = std::mem::take(&mut inst.deferred);
                for input in deferred {
                    self.server_input(i, input);
                }
            }
            Kind::Restore(i, persisted) => self.restore(i, persisted),
        }
    }

    fn instance_alive(&self, i: usize, gen: u32) -> bool {
        self.instances
            .get(i)
            .is_some_and(|inst| inst.gen == gen && inst.server.is_some())
    }

    fn set_server_open(&mut self, link: u64, open: bool) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        if l.server_open == open {
            return;
        }
        l.server_open = open;
        let i = l.instance;
        if let Some(inst) = self.instances.get_mut(i) {
            if open {
                inst.open_conns += 1;
            } else {
                inst.open_conns = inst.open_conns.saturating_sub(1);
            }
        }
    }

    /// Forgets a link once neither side can use it and nothing is in flight.
    pub(crate) fn gc_link(&mut self, link: u64) {
        if self
            .links
            .get(&link)
            .is_some_and(|l| !l.client_open && !l.server_open && !l.busy())
        {
            self.links.remove(&link);
        }
    }

    pub(crate) fn delay(&mut self, client: usize) -> Duration {
        let mut d = self.config.network.sample(&mut self.net_rng);
        if let Some((until, extra)) = self.clients[client].slow {
            if self.now < until {
                d += extra;
            } else {
                self.clients[client].slow = None;
            }
        }
        self.config.network.round_up(self.now + d)
    }

    // ------------------------------------------------------------------------------ network

    fn connect(&mut self, link: u64) {
        let Some(l) = self.links.get(&link) else {
            return;
        };
        let c = l.client;
        if !l.client_open {
            self.links.remove(&link);
            return;
        }
        let live = self.active.filter(|&i| self.instances[i].server.is_some());
        match live {
            Some(i) => {
                if let Some(until) = self.instances[i].frozen_until {
                    self.push(until, Kind::Connect(link));
                    return;
                }
                let gen = self.instances[i].gen;
                if let Some(l) = self.links.get_mut(&link) {
                    l.instance = i;
                    l.instance_gen = gen;
                }
                self.set_server_open(link, true);
                self.server_input(
                    i,
                    ServerInput::Connected(ConnId(link), ConnectInfo::default()),
                );
                self.client_input(c, link, ClientInput::Connected);
            }
            None => {
                if let Some(l) = self.links.get_mut(&link) {
                    l.client_open = false;
                }
                self.client_input(
                    c,
                    link,
                    ClientInput::ConnectFailed("connection refused".into()),
                );
                self.gc_link(link);
            }
        }
    }

    pub(crate) fn send_up(&mut self, link: u64, payload: Payload) {
        let Some(c) = self.links.get(&link).map(|l| l.client) else {
            return;
        };
        if self.links.get(&link).is_some_and(|l| l.cut) {
            return;
        }
        let at = self.delay(c);
        self.seq += 1;
        let id = self.seq;
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let at = l.up.push(id, at, payload);
        self.push(at, Kind::DeliverUp(link, id));
    }

    fn send_down(&mut self, link: u64, payload: Payload) {
        let Some(c) = self.links.get(&link).map(|l| l.client) else {
            return;
        };
        if self.links.get(&link).is_some_and(|l| l.cut) {
            return;
        }
        let at = self.delay(c);
        self.seq += 1;
        let id = self.seq;
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let at = l.down.push(id, at, payload);
        self.push(at, Kind::DeliverDown(link, id));
    }

    pub(crate) fn deliver_up(&mut self, link: u64, id: u64) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        if l.up.queue.front().is_none_or(|p| p.id != id) {
            return;
        }
        let Some(packet) = l.up.queue.pop_front() else {
            return;
        };
        let (i, gen, open) = (l.instance, l.instance_gen, l.server_open);
        if !packet.lost && open && self.instance_alive(i, gen) {
            match packet.payload {
                Payload::Text(text) => self.server_input(i, ServerInput::Text(ConnId(link), text)),
                Payload::Close(..) => self.server_input(i, ServerInput::Closed(ConnId(link))),
            }
        }
        self.gc_link(link);
    }

    pub(crate) fn deliver_down(&mut self, link: u64, id: u64) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        if l.down.queue.front().is_none_or(|p| p.id != id) {
            return;
        }
        let Some(packet) = l.down.queue.pop_front() else {
            return;
        };
        let (i, gen, c) = (l.instance, l.instance_gen, l.client);
        if let (Payload::Text(text), false) = (&packet.payload, packet.copy) {
            l.in_flight = l.in_flight.saturating_sub(1);
            if l.server_open && self.instance_alive(i, gen) {
                let len = text.len();
                self.server_input(i, ServerInput::Sent(ConnId(link), len));
            }
        }
        let client_open = self.links.get(&link).is_some_and(|l| l.client_open);
        if !packet.lost && client_open {
            match packet.payload {
                Payload::Text(text) => self.client_input(c, link, ClientInput::Text(text)),
                Payload::Close(code, reason) => {
                    if let Some(l) = self.links.get_mut(&link) {
                        l.client_open = false;
                    }
                    self.client_input(c, link, ClientInput::Closed(Some(code), reason));
                }
            }
        }
        self.gc_link(link);
    }

    /// Cuts a socket: what is in flight is lost, each side hears of it after its own delay.
    pub(crate) fn cut_link(&mut self, link: u64) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        l.cut = true;
        l.up.queue.clear();
        l.down.queue.clear();
        l.up.silent = false;
        l.down.silent = false;
        l.in_flight = 0;
        let (c, client_open, server_open) = (l.client, l.client_open, l.server_open);
        if client_open {
            let at = self.delay(c);
            self.push(at, Kind::ClientClose(link));
        }
        if server_open {
            let at = self.delay(c);
            self.push(at, Kind::ServerClose(link));
        }
    }

    // ------------------------------------------------------------------------------ clients

    fn client_input(&mut self, c: usize, link: u64, input: ClientInput) {
        let sc = &mut self.clients[c];
        if sc.frozen_until.is_some() {
            sc.deferred.push((link, input));
            return;
        }
        if sc.link != Some(link) {
            return; // an old socket's leftovers
        }
        let now = self.origin + self.now;
        if self.config.trace > 0 {
            let line = format!("c{c} <- {input:?}");
            self.trace_line(line);
        }
        let sc = &mut self.clients[c];
        if self.stepwise {
            sc.history.record((now, &input));
        }
        if matches!(
            input,
            ClientInput::ConnectFailed(_) | ClientInput::Closed(..)
        ) {
            sc.link = None;
        }
        sc.machine.handle_input(now, input);
        self.stats.client_inputs += 1;
        self.drain_client(c);
    }

    pub(crate) fn arm_client(&mut self, c: usize) {
        let sc = &self.clients[c];
        if sc.frozen_until.is_some() {
            return;
        }
        let t = sc.machine.poll_timeout().map(|i| {
            self.config
                .network
                .round_up(i.saturating_duration_since(self.origin))
        });
        if t != sc.armed {
            let gen = sc.gen;
            self.clients[c].armed = t;
            if let Some(t) = t {
                self.push(t.max(self.now), Kind::ClientTimer(c, gen));
            }
        }
    }

    /// Drains a client's transmits and events into the network and the model.
    pub(crate) fn drain_client(&mut self, c: usize) {
        let mut produced = 0usize;
        while let Some(t) = self.clients[c].machine.poll_transmit() {
            produced += 1;
            self.client_transmit(c, t);
        }
        while let Some(e) = self.clients[c].machine.poll_event() {
            produced += 1;
            self.client_event(c, e);
        }
        let pending = self.clients[c].model.requests.len();
        if produced > 16 + 3 * pending {
            self.violate(
                Some(c),
                format!(
                    "{produced} outputs from one step (bound {})",
                    16 + 3 * pending
                ),
            );
        }
        self.arm_client(c);
    }

    fn client_transmit(&mut self, c: usize, t: Transmit) {
        if self.config.trace > 0 {
            let line = format!("c{c} -> {t:?}");
            self.trace_line(line);
        }
        match t {
            Transmit::Open => {
                if let Some(old) = self.clients[c].link {
                    self.violate(Some(c), format!("Open while socket {old} is still open"));
                }
                let id = self.next_link;
                self.next_link += 1;
                self.links.insert(id, Link::new(c));
                self.clients[c].link = Some(id);
                self.stats.opens += 1;
                self.opens.push(self.now);
                let at = self.delay(c);
                self.push(at, Kind::Connect(id));
            }
            Transmit::Frame(text) => match self.clients[c].link {
                Some(link) => self.send_up(link, Payload::Text(text)),
                None => self.violate(Some(c), "frame written with no open socket".into()),
            },
            Transmit::Close { code, reason } => match self.clients[c].link.take() {
                Some(link) => {
                    if let Some(l) = self.links.get_mut(&link) {
                        l.client_open = false;
                    }
                    self.send_up(link, Payload::Close(code, reason));
                    self.gc_link(link);
                }
                None => self.violate(Some(c), "Close with no open socket".into()),
            },
        }
    }

    fn client_event(&mut self, c: usize, e: Event) {
        if self.config.trace > 0 {
            let line = format!("c{c} event {e:?}");
            self.trace_line(line);
        }
        if let Err(what) = self.clients[c].model.observe(&e) {
            self.violate(Some(c), what);
        }
        if self.config.record_events {
            self.clients[c].log.push(e);
        }
    }

    // ------------------------------------------------------------------------------ servers

    fn server_input(&mut self, i: usize, input: ServerInput) {
        let inst = &mut self.instances[i];
        if inst.frozen_until.is_some() {
            inst.deferred.push(input);
            return;
        }
        if self.config.trace > 0 && !matches!(input, ServerInput::Sent(..)) {
            let line = format!("s{i} <- {input:?}");
            self.trace_line(line);
        }
        if let ServerInput::Closed(conn) = &input {
            // The server forgets the connection only now (a frozen one later than told).
            self.set_server_open(conn.0, false);
        }
        let now = self.origin + self.now;
        let inst = &mut self.instances[i];
        let Some(server) = inst.server.as_mut() else {
            return;
        };
        if self.stepwise {
            inst.history.record((now, &input));
        }
        let started = self.config.stopwatch.map(|clock| clock());
        server.handle_input(now, input);
        if let (Some(clock), Some(started)) = (self.config.stopwatch, started) {
            let spent = clock().saturating_duration_since(started).as_nanos();
            self.stats.server_nanos += u64::try_from(spent).unwrap_or(u64::MAX);
        }
        self.stats.server_inputs += 1;
        self.drain_server(i);
    }

    pub(crate) fn server_timeout(&mut self) {
        self.server_deadline = None;
        let Some(i) = self.active else {
            return;
        };
        if self.instances[i].frozen_until.is_some() {
            return;
        }
        self.server_input(i, ServerInput::Timeout);
        let deadline = self.instances[i]
            .server
            .as_ref()
            .and_then(Server::poll_timeout)
            .map(|t| t.saturating_duration_since(self.origin));
        if deadline.is_some_and(|d| d < self.now) {
            self.violate(
                None,
                "server handle_timeout left a deadline in the past (busy loop)".into(),
            );
        }
    }

    /// Drains a server's transmits and events into the network and the application.
    pub(crate) fn drain_server(&mut self, i: usize) {
        let (max_frames, max_control) = (
            self.config.server.max_queued_frames,
            self.config.server.max_control_frames,
        );
        let mut events = 0usize;
        let mut closed = Vec::new();
        loop {
            let Some(server) = self.instances[i].server.as_mut() else {
                return;
            };
            let Some((conn, t)) = server.poll_transmit() else {
                break;
            };
            if self.config.trace > 0 {
                let line = format!("s{i} -> {} {t:?}", conn.0);
                self.trace_line(line);
            }
            let Some(l) = self.links.get_mut(&conn.0) else {
                self.violate(
                    None,
                    format!("server wrote to unknown connection {}", conn.0),
                );
                continue;
            };
            if l.server_close_sent || !l.server_open {
                let c = l.client;
                self.violate(
                    Some(c),
                    format!(
                        "server wrote to connection {} after its close: {t:?}",
                        conn.0
                    ),
                );
                continue;
            }
            match t {
                ServerTransmit::Frame(text) => {
                    l.in_flight += 1;
                    let (in_flight, c) = (l.in_flight, l.client);
                    self.stats.server_frames += 1;
                    self.stats.server_bytes += text.len() as u64;
                    if in_flight > max_frames + max_control + 2 {
                        self.violate(
                            Some(c),
                            format!("{in_flight} frames in flight on one connection"),
                        );
                    }
                    self.send_down(conn.0, Payload::Text(text.to_string()));
                }
                ServerTransmit::Close { code, reason } => {
                    l.server_close_sent = true;
                    closed.push((conn.0, code));
                    self.send_down(conn.0, Payload::Close(code, reason));
                    self.push(self.now, Kind::ServerClose(conn.0));
                }
            }
        }
        while let Some(e) = self.instances[i]
            .server
            .as_mut()
            .and_then(Server::poll_event)
        {
            events += 1;
            self.stats.server_events += 1;
            self.server_event(i, e);
        }
        for (link, code) in closed {
            if let Some(l) = self.links.get(&link).filter(|l| !l.closing_announced) {
                let c = l.client;
                self.violate(
                    Some(c),
                    format!("server closed connection {link} with {code} without a Closing event"),
                );
            }
        }
        let bound = 16 + 6 * self.instances[i].open_conns;
        if events > bound {
            self.violate(
                None,
                format!("{events} server events from one step (bound {bound})"),
            );
        }
    }

    fn client_of(&self, conn: ConnId) -> Option<usize> {
        self.links.get(&conn.0).map(|l| l.client)
    }

    fn server_event(&mut self, i: usize, e: ServerEvent) {
        if self.config.trace > 0 {
            let line = format!("s{i} event {e:?}");
            self.trace_line(line);
        }
        match &e {
            ServerEvent::SessionCreated { .. } => self.stats.sessions_created += 1,
            ServerEvent::SessionResumed { .. } => self.stats.sessions_resumed += 1,
            ServerEvent::Closing { code: 4002, .. } => self.stats.reaped += 1,
            ServerEvent::Closing { code: 1013, .. } => self.stats.slow_consumers += 1,
            ServerEvent::Closing { code: 4009, .. } => self.stats.taken_over += 1,
            _ => {}
        }
        if let ServerEvent::Closing { conn, code, .. } = &e {
            let twice = self.links.get_mut(&conn.0).map(|l| {
                let twice = l.closing_announced;
                l.closing_announced = true;
                (twice, l.client)
            });
            if let Some((true, c)) = twice {
                self.violate(
                    Some(c),
                    format!("a second Closing ({code}) for connection {}", conn.0),
                );
            }
        }
        match &e {
            ServerEvent::SessionCreated { session, conn, .. }
            | ServerEvent::SessionResumed { session, conn, .. } => {
                if let Some(c) = self.client_of(*conn) {
                    self.app_sessions[c] = Some(session.clone());
                }
            }
            ServerEvent::Request {
                session,
                request_id,
                ..
            } => {
                self.stats.requests_to_app += 1;
                let key = (session.0.clone(), request_id.clone());
                let entry = self.lineage.requests.entry(key).or_insert((0, None));
                entry.0 += 1;
                let times = entry.0;
                if times > 1 {
                    self.violate(
                        None,
                        format!(
                            "request {request_id} of session {session} reached the application \
                             {times} times in one line of server state"
                        ),
                    );
                }
                if let Some(within) = self.config.respond_within {
                    let at = self
                        .config
                        .network
                        .round_up(self.now + within.mul_f64(self.app_rng.unit_f64()));
                    let gen = self.instances[i].gen;
                    self.pending_responds += 1;
                    self.push(
                        at,
                        Kind::Respond {
                            instance: i,
                            gen,
                            session: session.clone(),
                            request_id: request_id.clone(),
                        },
                    );
                }
            }
            // A slow network can make a hello miss the server's deadline: not misbehaviour.
            ServerEvent::BadInput {
                error: PeerError::HandshakeTimeout,
                ..
            } => {}
            ServerEvent::BadInput { conn, error } => {
                let c = self.client_of(*conn);
                self.violate(c, format!("server says our client misbehaved: {error}"));
            }
            ServerEvent::ConnectionRejected { conn, code } => {
                let c = self.client_of(*conn);
                self.violate(c, format!("server rejected our client: {code:?}"));
            }
            _ => {}
        }
        if self.config.record_events {
            self.server_log.push(e);
        }
    }

    /// Per-instant checks of the live server's bounds, and its next deadline.
    pub(crate) fn after_instant(&mut self) {
        self.check_half_open();
        self.server_deadline = None;
        let Some(i) = self.active else {
            return;
        };
        let inst = &self.instances[i];
        if inst.frozen_until.is_some() {
            return;
        }
        let Some(server) = inst.server.as_ref() else {
            return;
        };
        self.server_deadline = server
            .poll_timeout()
            .map(|t| {
                self.config
                    .network
                    .round_up(t.saturating_duration_since(self.origin))
            })
            .map(|t| t.max(self.now));
        if !self.config.check_server_every_step {
            return;
        }
        let st = server.stats();
        let cfg = &self.config.server;
        let mut bad = Vec::new();
        if st.max_window_events > cfg.recovery_session_events.max(1) {
            bad.push(format!("a window holds {} events", st.max_window_events));
        }
        if st.max_window_bytes > cfg.recovery_session_bytes.max(16 << 10) {
            bad.push(format!("a window holds {} bytes", st.max_window_bytes));
        }
        if st.log_bytes > cfg.recovery_total_bytes.max(16 << 10) {
            bad.push(format!("the log holds {} bytes", st.log_bytes));
        }
        if st.max_control_frames > cfg.max_control_frames.max(1) {
            bad.push(format!("{} control frames queued", st.max_control_frames));
        }
        if st.max_dedup > cfg.dedup_max.max(1) {
            bad.push(format!("dedup window of {}", st.max_dedup));
        }
        if st.sessions > cfg.max_sessions.max(1) {
            bad.push(format!("{} sessions", st.sessions));
        }
        if st.connections != inst.open_conns {
            bad.push(format!(
                "{} connections known, {} open (leak or loss)",
                st.connections, inst.open_conns
            ));
        }
        if st.pending_events > 0 {
            bad.push(format!("{} events left after draining", st.pending_events));
        }
        for b in bad {
            self.violate(None, format!("server bound: {b}"));
        }
    }
}
